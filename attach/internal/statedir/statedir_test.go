//go:build linux

package statedir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/attach/internal/proctest"
	"github.com/musterhq/muster/broker/proto"
	"github.com/shirou/gopsutil/v3/process"
)

func sortedRecords(rs []Record) []Record {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Record) int { return strings.Compare(a.ID, b.ID) })
	return rs
}

func TestStateRoundTrip(t *testing.T) {
	s := Dir(filepath.Join(t.TempDir(), "state"))
	if recs, err := s.Load(); err != nil || len(recs) != 0 {
		t.Fatalf("Load of a missing dir = %v, %v", recs, err)
	}
	a := Record{ID: "a", Service: "C/N/S", PID: 123, StartTicks: 170000, BootID: "b1", TempDir: "/tmp/x/a", StartedMS: 1700000000123}
	b := Record{ID: "b-2", Service: "C/N/T", PID: 456, StartTicks: 170001, BootID: "b1", TempDir: "/tmp/x/b-2", StartedMS: 1700000001001}
	for _, r := range []Record{a, b} {
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.Load()
	if err != nil || !slices.Equal(sortedRecords(recs), []Record{a, b}) {
		t.Fatalf("Load = %+v, %v", recs, err)
	}
	a.PID = 789
	if err := s.Save(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("b-2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("b-2"); err != nil {
		t.Errorf("removing a missing record = %v", err)
	}
	recs, err = s.Load()
	if err != nil || !slices.Equal(recs, []Record{a}) {
		t.Fatalf("Load after overwrite and remove = %+v, %v", recs, err)
	}

	for name, want := range map[string]os.FileMode{"replicas": 0o700, "replicas/a.json": 0o600} {
		if fi, err := os.Stat(filepath.Join(string(s), name)); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(string(s), "replicas"))
	if len(ents) != 1 {
		t.Errorf("replicas dir holds %d entries, want just a.json (no temp files)", len(ents))
	}
}

func TestStateBadID(t *testing.T) {
	s := Dir(t.TempDir())
	for _, id := range []string{"", ".", "..", "a/b", "../x", ".hidden", "a\x00b"} {
		if err := s.Save(Record{ID: id}); !errors.Is(err, ErrRecordID) {
			t.Errorf("Save(%q) = %v, want ErrRecordID", id, err)
		}
		if err := s.Remove(id); !errors.Is(err, ErrRecordID) {
			t.Errorf("Remove(%q) = %v, want ErrRecordID", id, err)
		}
	}
}

func TestStateCorruptSkipped(t *testing.T) {
	s := Dir(t.TempDir())
	good := Record{ID: "good", PID: 42, StartTicks: 1}
	if err := s.Save(good); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(string(s), "replicas")
	bad := map[string]string{
		"garbage.json":  "{not json",
		"empty.json":    "",
		"mismatch.json": `{"id":"other","pid":7}`,
	}
	for name, body := range bad {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "adir.json"), 0o700); err != nil { // unreadable as a file
		t.Fatal(err)
	}
	inProgress := filepath.Join(dir, ".x.json.tmp-1")
	if err := os.WriteFile(inProgress, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}

	recs, err := s.Load()
	if !slices.Equal(recs, []Record{good}) {
		t.Errorf("Load kept %+v, want just the good record", recs)
	}
	if !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("Load error = %v, want ErrCorruptRecord", err)
	}
	for _, name := range []string{"garbage.json", "empty.json", "mismatch.json", "adir.json"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
		if _, serr := os.Stat(filepath.Join(dir, name)); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("corrupt %s not removed: %v", name, serr)
		}
	}
	if _, err := os.Stat(inProgress); err != nil {
		t.Errorf("a temp file of a Save was touched: %v", err)
	}
	if recs, err := s.Load(); err != nil || len(recs) != 1 {
		t.Errorf("second Load = %v, %v; want the good record and no error", recs, err)
	}
}

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		root, path string
		want       bool
	}{
		{"/run/m/tmp", "/run/m/tmp/r1", true},
		{"/run/m/tmp", "/run/m/tmp/r1/x", true},
		{"/run/m/tmp/", "/run/m/tmp/r1", true},
		{"/run/m/tmp", "/run/m/tmp", false},
		{"/run/m/tmp", "/run/m/tmp/..", false},
		{"/run/m/tmp", "/run/m/tmp/../../etc", false},
		{"/run/m/tmp", "/run/m/tmpx", false},
		{"/run/m/tmp", "/", false},
		{"/run/m/tmp", "r1", false},
		{"", "/run/m/tmp/r1", false},
		{"/run/m/tmp", "/run/m/tmp/..r1", true},
	} {
		if got := within(tc.root, tc.path); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.root, tc.path, got, tc.want)
		}
	}
}

func TestCleanOrphans(t *testing.T) {
	s := Dir(filepath.Join(t.TempDir(), "state"))
	tempRoot := filepath.Join(t.TempDir(), "tmp")
	mkdir := func(id string) string {
		d := filepath.Join(tempRoot, id)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	record := func(id string, ident proc.Ident) Record {
		r := Record{ID: id, Service: "C/N/S", PID: ident.PID, StartTicks: ident.StartTicks, BootID: ident.BootID, TempDir: mkdir(id), StartedMS: time.Now().UnixMilli()}
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// start runs a helper that stands in for a replica of a dead manager.
	// Its temp dir is the record's, not the Proc's, so only CleanOrphans
	// removes it.
	start := func(mode string) (*proc.Proc, *proctest.MemLog) {
		spec, log := proctest.Spec(t, mode)
		spec.TempDir = ""
		spec.Dir = t.TempDir()
		p := proctest.Start(t, spec)
		proctest.WaitLog(t, log, "ready\n")
		return p, log
	}

	orphan, _ := start("sleep")
	orphanRec := record("orphan", orphan.Ident())

	stubborn, _ := start("ignore-term")
	stubbornRec := record("stubborn", stubborn.Ident())

	// A live group leader whose start ticks do not match, if only by one
	// tick: the PID was "reused". It must not be signalled.
	reused, reusedLog := start("watch")
	reusedID := reused.Ident()
	reusedID.StartTicks++
	reusedRec := record("reused", reusedID)

	// Our own PID with wrong start ticks.
	selfRec := record("self", proc.Ident{PID: os.Getpid(), StartTicks: 12345, BootID: orphan.Ident().BootID})

	// A replica that is gone.
	spec, _ := proctest.Spec(t, "crash")
	dead := proctest.Start(t, spec)
	proctest.WaitDone(t, dead)
	deadRec := record("dead", dead.Ident())

	// A start the manager's crash cut short: reserved, never started.
	if err := s.Reserve("reserved", "C/N/S", mkdir("reserved")); err != nil {
		t.Fatal(err)
	}
	reservedRec := Record{ID: "reserved", Service: "C/N/S", TempDir: filepath.Join(tempRoot, "reserved")}

	recs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	// Records written after the load (a replica of the current run):
	// record and dir stay. So does a dir nobody recorded.
	liveRec := record("live", proc.Ident{PID: os.Getpid()})
	leftover := mkdir("leftover")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rep, err := s.CleanOrphans(ctx, recs, tempRoot, 300*time.Millisecond, log)
	if err != nil {
		t.Fatalf("CleanOrphans: %v", err)
	}

	if got := sortedRecords(rep.Stopped); !slices.Equal(got, []Record{orphanRec, stubbornRec}) {
		t.Errorf("Stopped = %+v", got)
	}
	if got := sortedRecords(rep.Stale); !slices.Equal(got, []Record{deadRec, reservedRec, reusedRec, selfRec}) {
		t.Errorf("Stale = %+v", got)
	}
	wantDirs := []string{deadRec.TempDir, orphanRec.TempDir, reservedRec.TempDir, reusedRec.TempDir, selfRec.TempDir, stubbornRec.TempDir}
	slices.Sort(wantDirs)
	gotDirs := slices.Sorted(slices.Values(rep.RemovedDirs))
	if !slices.Equal(gotDirs, wantDirs) {
		t.Errorf("RemovedDirs = %v, want %v", gotDirs, wantDirs)
	}
	for _, d := range wantDirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed: %v", d, err)
		}
	}
	for _, d := range []string{liveRec.TempDir, leftover} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("a dir the clean-up did not record was removed: %v", err)
		}
	}
	if recs, err := s.Load(); err != nil || !slices.Equal(recs, []Record{liveRec}) {
		t.Errorf("records left = %+v, %v; want only the live one", recs, err)
	}

	// The orphans are gone: SIGTERM for one, SIGKILL after grace for the other.
	if st := proctest.WaitDone(t, orphan); st.Code != 0 {
		t.Errorf("orphan exit = %v, want exit 0 on SIGTERM", st)
	}
	if st := proctest.WaitDone(t, stubborn); st.Signal != "killed" {
		t.Errorf("stubborn orphan exit = %v, want killed", st)
	}

	// The reused PID got no signal. Fence: SIGWINCH is numbered above
	// SIGTERM, so a SIGTERM sent before it would be delivered, and logged,
	// first.
	select {
	case <-reused.Done():
		t.Fatalf("the process behind a reused PID exited: %v", reused.Exit())
	default:
	}
	if err := syscall.Kill(reused.PID(), syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	proctest.WaitLog(t, reusedLog, "winch\n")
	if out := reusedLog.String(); strings.Contains(out, "term") {
		t.Errorf("the process behind a reused PID got SIGTERM: %q", out)
	}
	reused.Stop(t.Context(), 0)
}

func TestCleanOrphansNothingToDo(t *testing.T) {
	s := Dir(filepath.Join(t.TempDir(), "state"))
	recs, err := s.Load()
	if err != nil || len(recs) != 0 {
		t.Fatalf("Load = %v, %v", recs, err)
	}
	rep, err := s.CleanOrphans(context.Background(), recs, filepath.Join(t.TempDir(), "missing"), time.Second, nil)
	if err != nil || len(rep.Stopped)+len(rep.Stale)+len(rep.RemovedDirs) != 0 {
		t.Errorf("CleanOrphans on nothing = %+v, %v", rep, err)
	}
}

func TestCleanOrphansTempDirOutsideRoot(t *testing.T) {
	s := Dir(filepath.Join(t.TempDir(), "state"))
	tempRoot := t.TempDir()
	outside := t.TempDir()
	if err := s.Save(Record{ID: "r", PID: 0, TempDir: outside}); err != nil {
		t.Fatal(err)
	}
	recs, _ := s.Load()
	rep, err := s.CleanOrphans(context.Background(), recs, tempRoot, time.Second, nil)
	if err != nil || len(rep.Stale) != 1 || len(rep.RemovedDirs) != 0 {
		t.Errorf("CleanOrphans = %+v, %v", rep, err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("a temp dir outside the root was removed: %v", err)
	}
}

// testWriter sends slog output to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// writeRawRecord writes a state record as JSON fields, so the test reads
// like the file a manager (of this or an older version) leaves.
func writeRawRecord(t *testing.T, d Dir, fields map[string]any) {
	t.Helper()
	dir := filepath.Join(string(d), "replicas")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fields["id"].(string)+".json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCleanOrphansNeedsExactStartTicks: a process that has the recorded PID
// and was created within the same second (so a create time in whole seconds
// matches) is not taken for the recorded one unless its start ticks match.
func TestCleanOrphansNeedsExactStartTicks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ticks func(uint64) any // the record's start_ticks (nil: an older record without them)
	}{
		{"other start ticks, same second", func(st uint64) any { return st + 1 }},
		{"older record without start ticks", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Dir(filepath.Join(t.TempDir(), "state"))
			spec, log := proctest.Spec(t, "watch")
			spec.TempDir = ""
			p := proctest.Start(t, spec)
			proctest.WaitLog(t, log, "ready\n")
			gp, err := process.NewProcess(int32(p.PID()))
			if err != nil {
				t.Fatal(err)
			}
			ct, err := gp.CreateTime()
			if err != nil {
				t.Fatal(err)
			}
			rec := map[string]any{"id": "r1", "service": "C/N/S", "pid": p.PID(), "create_time_ms": ct,
				"boot_id": p.Ident().BootID, "started_ms": time.Now().UnixMilli()}
			if tc.ticks != nil {
				rec["start_ticks"] = tc.ticks(p.Ident().StartTicks)
			}
			writeRawRecord(t, d, rec)
			recs, _ := d.Load()
			rep, err := d.CleanOrphans(t.Context(), recs, "", 300*time.Millisecond, nil)
			if err != nil || len(rep.Stale) != 1 || len(rep.Stopped) != 0 {
				t.Fatalf("CleanOrphans = %+v, %v; want the record stale", rep, err)
			}
			// Fence: SIGWINCH is numbered above SIGTERM, so a SIGTERM sent
			// before it would be delivered, and logged, first.
			if err := syscall.Kill(p.PID(), syscall.SIGWINCH); err != nil {
				t.Fatalf("the recorded process is gone: %v (%v)", err, p.Exit())
			}
			proctest.WaitLog(t, log, "winch\n")
			if strings.Contains(log.String(), "term") {
				t.Fatalf("a process that only shares the recorded PID got SIGTERM: %q", log.String())
			}
		})
	}
}

// TestCleanOrphansAllAtOnce: busy orphans are stopped side by side (one
// grace in all, not one each), and once ctx has ended without any grace,
// so a manager's start-up is not eaten by the clean-up.
func TestCleanOrphansAllAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		cancel bool
		within time.Duration
	}{
		{"one grace for all", 2 * time.Second, false, 5 * time.Second},
		{"context over: no grace", time.Hour, true, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Dir(filepath.Join(t.TempDir(), "state"))
			var procs []*proc.Proc
			for i := range 3 {
				spec, log := proctest.Spec(t, "ignore-term")
				spec.TempDir = ""
				p := proctest.Start(t, spec)
				proctest.WaitLog(t, log, "ready\n")
				id := p.Ident()
				if err := s.Save(Record{ID: fmt.Sprint("r", i), PID: id.PID, StartTicks: id.StartTicks, BootID: id.BootID}); err != nil {
					t.Fatal(err)
				}
				procs = append(procs, p)
			}
			ctx, cancel := context.WithCancel(t.Context())
			if tc.cancel {
				cancel()
			}
			defer cancel()
			recs, _ := s.Load()
			t0 := time.Now()
			rep, err := s.CleanOrphans(ctx, recs, "", tc.grace, nil)
			if took := time.Since(t0); took > tc.within {
				t.Errorf("CleanOrphans took %v with 3 orphans ignoring SIGTERM, grace %v", took, tc.grace)
			}
			if err != nil || len(rep.Stopped) != 3 {
				t.Errorf("CleanOrphans = %+v, %v; want 3 stopped", rep, err)
			}
			for _, p := range procs {
				if st := proctest.WaitDone(t, p); st.Signal != "killed" {
					t.Errorf("orphan exit = %v, want killed", st)
				}
			}
		})
	}
}

// TestLock: one holder per state dir, in this process or another; the
// refusal names the dir and the holder's pid; unlock frees it.
func TestLock(t *testing.T) {
	d := Dir(t.TempDir())
	unlock, err := d.Lock()
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Lock()
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), string(d)) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second Lock = %v; want ErrLocked naming %s and pid %d", err, d, os.Getpid())
	}
	unlock()
	unlock2, err := d.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}

// A manager killed between starting a replica and recording its PID left
// a reserved record (PID 0): the next run finds the process by the replica
// id in its environment and stops it; a reserved record whose process
// never started stays harmless.
func TestCleanOrphansFindsUnrecordedReplica(t *testing.T) {
	s := Dir(filepath.Join(t.TempDir(), "state"))
	tempRoot := filepath.Join(t.TempDir(), "tmp")
	id := "unrecorded-" + strconv.Itoa(os.Getpid())
	spec, log := proctest.Spec(t, "sleep")
	spec.TempDir = ""
	spec.Dir = t.TempDir()
	spec.Env = append(spec.Env, proto.EnvReplicaID+"="+id)
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")
	if err := s.Reserve(id, "C/N/S", filepath.Join(tempRoot, id)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve("never-started", "C/N/S", filepath.Join(tempRoot, "never-started")); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.CleanOrphans(t.Context(), recs, tempRoot, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the unrecorded replica is still running")
	}
	if len(rep.Stopped) != 1 || rep.Stopped[0].ID != id || rep.Stopped[0].PID != p.PID() {
		t.Fatalf("stopped %+v, want the unrecorded replica (pid %d)", rep.Stopped, p.PID())
	}
	if len(rep.Stale) != 1 || rep.Stale[0].ID != "never-started" {
		t.Fatalf("stale %+v, want the reservation that never started", rep.Stale)
	}
}
