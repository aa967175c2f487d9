// Package statedir keeps the attach manager's state dir: one record per
// replica under <dir>/replicas/<id>.json, written atomically, so that a
// manager that died (even by SIGKILL) can be cleaned up after by the next
// one (see CleanOrphans).
package statedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/musterhq/muster/attach/internal/proc"
)

var (
	// ErrRecordID means a replica id cannot name a record file.
	ErrRecordID = errors.New("attach: invalid replica id for a record")
	// ErrLocked means another attach manager holds the state dir (Lock).
	ErrLocked = errors.New("attach: state dir in use by another attach manager")
	// ErrCorruptRecord marks a record file that could not be read or parsed;
	// Load removes such files.
	ErrCorruptRecord = errors.New("attach: corrupt replica record")
)

// Record is what the state dir remembers of one replica so that a later run
// of the manager can recognise it: the PID with its exact start ticks and
// boot id (see proc.Ident), and the temp dir the manager made for it. A
// record with PID 0 is written before the temp dir is made and the process
// started (Reserve), so every temp dir a manager makes is recorded first.
// Records of older managers, which kept a create time in milliseconds
// instead, load with StartTicks 0 and are never taken for their process.
type Record struct {
	ID         string `json:"id"`
	Service    string `json:"service"`
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
	BootID     string `json:"boot_id"`
	TempDir    string `json:"temp_dir"`
	StartedMS  int64  `json:"started_ms"`
}

// Ident is the process the record names.
func (r Record) Ident() proc.Ident {
	return proc.Ident{PID: r.PID, StartTicks: r.StartTicks, BootID: r.BootID}
}

// Dir is a state dir.
type Dir string

func (d Dir) replicasDir() string { return filepath.Join(string(d), "replicas") }

// checkRecordID accepts ids that name exactly one file in the replicas dir.
func checkRecordID(id string) error {
	if id == "" || id == "." || id == ".." || strings.HasPrefix(id, ".") ||
		strings.ContainsAny(id, "/\\\x00") {
		return fmt.Errorf("%w: %q", ErrRecordID, id)
	}
	return nil
}

// Save writes r, replacing any record with the same id. The file is written
// to a temporary name, synced and renamed, so a crash leaves either the old
// or the new record.
func (d Dir) Save(r Record) error { return d.save(r, true) }

// Reserve writes the record of a replica about to start (PID 0): its id,
// service and temp dir. It is not synced: it only has to outlive a crash
// of the manager, not of the host (a reboot takes the processes with it).
func (d Dir) Reserve(id, service, tempDir string) error {
	return d.save(Record{ID: id, Service: service, TempDir: tempDir}, false)
}

func (d Dir) save(r Record, sync bool) (retErr error) {
	if err := checkRecordID(r.ID); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
	}
	dir := d.replicasDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
	}
	f, err := os.CreateTemp(dir, "."+r.ID+".json.tmp-*") // 0600
	if err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("attach: save record %s: %w", r.ID, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, r.ID+".json")); err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
	}
	return nil
}

// Remove deletes the record of replica id; a missing record is not an error.
func (d Dir) Remove(id string) error {
	if err := checkRecordID(id); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(d.replicasDir(), id+".json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("attach: remove record %s: %w", id, err)
	}
	return nil
}

// Load returns every readable record. Files that cannot be read or parsed,
// or whose id does not match their name, are removed and reported, joined,
// in the error; the good records are returned all the same.
func (d Dir) Load() ([]Record, error) {
	dir := d.replicasDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("attach: load records: %w", err)
	}
	var (
		recs []Record
		errs []error
	)
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue // a Save in progress, or not ours
		}
		path := filepath.Join(dir, name)
		r, err := readRecord(path, strings.TrimSuffix(name, ".json"))
		if err != nil {
			errs = append(errs, fmt.Errorf("%w %s: %w", ErrCorruptRecord, path, err))
			if rerr := os.RemoveAll(path); rerr != nil {
				errs = append(errs, fmt.Errorf("attach: remove corrupt record: %w", rerr))
			}
			continue
		}
		recs = append(recs, r)
	}
	return recs, errors.Join(errs...)
}

func readRecord(path, id string) (Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Record{}, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, err
	}
	if r.ID != id {
		return Record{}, fmt.Errorf("id %q in a file named for %q", r.ID, id)
	}
	return r, nil
}
