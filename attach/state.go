package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shirou/gopsutil/v3/process"
)

var (
	// ErrRecordID means a replica id cannot name a record file.
	ErrRecordID = errors.New("attach: invalid replica id for a record")
	// ErrCorruptRecord marks a record file that could not be read or parsed;
	// Load removes such files.
	ErrCorruptRecord = errors.New("attach: corrupt replica record")
)

// createTimeSlackMS is how far apart two create times of the same process,
// as gopsutil reports them, may be. On Linux gopsutil 3.24.5 computes the
// create time as whole seconds after boot plus a boot time it derives, on
// every call, from wall clock minus /proc/uptime, truncated to a second: the
// same process can be reported one second apart by two calls (and so by two
// runs of the manager). One second of slack absorbs that; a recycled PID is
// only taken for the old process if it was started within that second, is a
// group leader, and the PID space wrapped in between.
const createTimeSlackMS = 1000

// ProcRecord is what the state dir remembers of one replica so that a later
// run of the manager can recognise it: the PID together with the OS's create
// time of that process.
type ProcRecord struct {
	ID           string `json:"id"`
	Service      string `json:"service"`
	PID          int    `json:"pid"`
	CreateTimeMS int64  `json:"create_time_ms"`
	TempDir      string `json:"temp_dir"`
	StartedMS    int64  `json:"started_ms"`
}

// StateDir keeps one record per replica under Dir/replicas/<id>.json, written
// atomically, so that a manager that died (even by SIGKILL) can be cleaned
// up after by the next one.
type StateDir struct {
	Dir string
}

// CleanReport says what CleanOrphans did.
type CleanReport struct {
	Stopped     []ProcRecord // replicas of an earlier run that were still running and were stopped
	Stale       []ProcRecord // records whose PID is gone or now belongs to another process
	RemovedDirs []string     // temp dirs removed
}

func (s StateDir) replicasDir() string { return filepath.Join(s.Dir, "replicas") }

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
func (s StateDir) Save(r ProcRecord) (retErr error) {
	if err := checkRecordID(r.ID); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
	}
	dir := s.replicasDir()
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
	if err := f.Sync(); err != nil {
		return fmt.Errorf("attach: save record %s: %w", r.ID, err)
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
func (s StateDir) Remove(id string) error {
	if err := checkRecordID(id); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(s.replicasDir(), id+".json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("attach: remove record %s: %w", id, err)
	}
	return nil
}

// Load returns every readable record. Files that cannot be read or parsed,
// or whose id does not match their name, are removed and reported, joined,
// in the error; the good records are returned all the same.
func (s StateDir) Load() ([]ProcRecord, error) {
	dir := s.replicasDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("attach: load records: %w", err)
	}
	var (
		recs []ProcRecord
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

func readRecord(path, id string) (ProcRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ProcRecord{}, err
	}
	var r ProcRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return ProcRecord{}, err
	}
	if r.ID != id {
		return ProcRecord{}, fmt.Errorf("id %q in a file named for %q", r.ID, id)
	}
	return r, nil
}

// CleanOrphans stops what an earlier run of the manager left behind. For
// each record whose id is not in keep: if the PID still names the very
// process recorded (same create time, still leading its own process group),
// its group gets SIGTERM, up to grace to go, then SIGKILL; a PID that is gone
// or now belongs to another process is never signalled and the record is
// reported Stale. Then the record's temp dir (only if it lies under
// tempRoot) and the record are removed; a group that survives SIGKILL keeps
// both, for a later try. Finally every entry directly under tempRoot whose
// name is not in keep (the ids of this run's live replicas) is removed.
func (s StateDir) CleanOrphans(ctx context.Context, tempRoot string, keep map[string]bool, grace time.Duration, log *slog.Logger) (CleanReport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var rep CleanReport
	recs, err := s.Load()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range recs {
		if keep[r.ID] {
			continue // this run's own replica
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			return rep, errors.Join(errs...)
		}
		if ok, why := sameProcess(r); ok {
			log.Info("stopping orphaned replica", "replica", r.ID, "service", r.Service, "pid", r.PID)
			if err := stopGroup(ctx, r.PID, grace); err != nil {
				log.Warn("orphaned replica survived", "replica", r.ID, "pid", r.PID, "err", err)
				errs = append(errs, fmt.Errorf("attach: orphan %s (pid %d): %w", r.ID, r.PID, err))
				continue
			}
			rep.Stopped = append(rep.Stopped, r)
		} else {
			log.Info("stale replica record", "replica", r.ID, "pid", r.PID, "reason", why)
			rep.Stale = append(rep.Stale, r)
		}
		if r.TempDir != "" {
			if within(tempRoot, r.TempDir) {
				if removed, err := removeDir(r.TempDir); err != nil {
					errs = append(errs, err)
				} else if removed {
					rep.RemovedDirs = append(rep.RemovedDirs, r.TempDir)
				}
			} else {
				log.Warn("record's temp dir is outside the temp root; left alone", "replica", r.ID, "dir", r.TempDir, "root", tempRoot)
			}
		}
		if err := s.Remove(r.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if tempRoot != "" {
		ents, err := os.ReadDir(tempRoot)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("attach: clean temp root: %w", err))
		}
		for _, e := range ents {
			if keep[e.Name()] {
				continue
			}
			dir := filepath.Join(tempRoot, e.Name())
			if removed, err := removeDir(dir); err != nil {
				errs = append(errs, err)
			} else if removed {
				log.Info("removed orphaned temp dir", "dir", dir)
				rep.RemovedDirs = append(rep.RemovedDirs, dir)
			}
		}
	}
	return rep, errors.Join(errs...)
}

// sameProcess reports whether r.PID still names the process recorded in r,
// and if not, why.
func sameProcess(r ProcRecord) (bool, string) {
	if r.PID <= 1 || r.PID == os.Getpid() {
		// kill(-1) would reach every process we may signal.
		return false, "pid out of range"
	}
	p, err := process.NewProcess(int32(r.PID))
	if err != nil {
		return false, "pid gone"
	}
	ct, err := p.CreateTime()
	if err != nil {
		return false, "create time unreadable: " + err.Error()
	}
	if d := ct - r.CreateTimeMS; d > createTimeSlackMS || d < -createTimeSlackMS {
		return false, "pid reused"
	}
	if pgid, err := syscall.Getpgid(r.PID); err != nil || pgid != r.PID {
		return false, "no longer leads its process group"
	}
	return true, ""
}

// stopGroup sends SIGTERM to process group pgid, waits up to grace for it to
// go, then sends SIGKILL and waits a little longer (bounded by ctx and
// reapTimeout).
func stopGroup(ctx context.Context, pgid int, grace time.Duration) error {
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("attach: SIGTERM: %w", err)
	}
	if waitGroupGoneCtx(ctx, pgid, grace) {
		return nil
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("attach: SIGKILL: %w", err)
	}
	if waitGroupGoneCtx(ctx, pgid, reapTimeout) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%w: pgid %d", ErrGroupSurvived, pgid)
}

func waitGroupGoneCtx(ctx context.Context, pgid int, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return waitGroupGone(pgid, ctx.Done())
}

// within reports whether path lies strictly inside root.
func within(root, path string) bool {
	if root == "" || !filepath.IsAbs(path) {
		return false
	}
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(path))
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// removeDir removes path and everything under it, reporting whether there
// was anything to remove.
func removeDir(path string) (bool, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err := os.RemoveAll(path); err != nil {
		return false, fmt.Errorf("attach: remove %s: %w", path, err)
	}
	return true, nil
}
