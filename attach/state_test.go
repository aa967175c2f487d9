package attach

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v3/process"
)

func sortedRecords(rs []ProcRecord) []ProcRecord {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b ProcRecord) int { return strings.Compare(a.ID, b.ID) })
	return rs
}

func TestStateRoundTrip(t *testing.T) {
	s := StateDir{Dir: filepath.Join(t.TempDir(), "state")}
	if recs, err := s.Load(); err != nil || len(recs) != 0 {
		t.Fatalf("Load of a missing dir = %v, %v", recs, err)
	}
	a := ProcRecord{ID: "a", Service: "C/N/S", PID: 123, CreateTimeMS: 1700000000000, TempDir: "/tmp/x/a", StartedMS: 1700000000123}
	b := ProcRecord{ID: "b-2", Service: "C/N/T", PID: 456, CreateTimeMS: 1700000001000, TempDir: "/tmp/x/b-2", StartedMS: 1700000001001}
	for _, r := range []ProcRecord{a, b} {
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.Load()
	if err != nil || !slices.Equal(sortedRecords(recs), []ProcRecord{a, b}) {
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
	if err != nil || !slices.Equal(recs, []ProcRecord{a}) {
		t.Fatalf("Load after overwrite and remove = %+v, %v", recs, err)
	}

	for name, want := range map[string]os.FileMode{"replicas": 0o700, "replicas/a.json": 0o600} {
		if fi, err := os.Stat(filepath.Join(s.Dir, name)); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "replicas"))
	if len(ents) != 1 {
		t.Errorf("replicas dir holds %d entries, want just a.json (no temp files)", len(ents))
	}
}

func TestStateBadID(t *testing.T) {
	s := StateDir{Dir: t.TempDir()}
	for _, id := range []string{"", ".", "..", "a/b", "../x", ".hidden", "a\x00b"} {
		if err := s.Save(ProcRecord{ID: id}); !errors.Is(err, ErrRecordID) {
			t.Errorf("Save(%q) = %v, want ErrRecordID", id, err)
		}
		if err := s.Remove(id); !errors.Is(err, ErrRecordID) {
			t.Errorf("Remove(%q) = %v, want ErrRecordID", id, err)
		}
	}
}

func TestStateCorruptSkipped(t *testing.T) {
	s := StateDir{Dir: t.TempDir()}
	good := ProcRecord{ID: "good", PID: 42, CreateTimeMS: 1}
	if err := s.Save(good); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Dir, "replicas")
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
	if !slices.Equal(recs, []ProcRecord{good}) {
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

func TestSameProcessGuards(t *testing.T) {
	pid1, err := process.NewProcess(1)
	if err != nil {
		t.Fatal(err)
	}
	ct1, err := pid1.CreateTime()
	if err != nil {
		t.Fatal(err)
	}
	self, err := process.NewProcess(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	ctSelf, err := self.CreateTime()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []ProcRecord{
		{ID: "zero", PID: 0},
		{ID: "negative", PID: -1},
		{ID: "init", PID: 1, CreateTimeMS: ct1}, // kill(-1) would hit everyone
		{ID: "self", PID: os.Getpid(), CreateTimeMS: ctSelf},
	} {
		if ok, _ := sameProcess(r); ok {
			t.Errorf("sameProcess(%+v) = true: it would be signalled", r)
		}
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
	s := StateDir{Dir: filepath.Join(t.TempDir(), "state")}
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
	record := func(id string, pid int, createMS int64) ProcRecord {
		r := ProcRecord{ID: id, Service: "C/N/S", PID: pid, CreateTimeMS: createMS, TempDir: mkdir(id), StartedMS: time.Now().UnixMilli()}
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// start runs a helper that stands in for a replica of a dead manager.
	// Its temp dir is the record's, not the Proc's, so only CleanOrphans
	// removes it.
	start := func(mode string) (*Proc, *memLog) {
		spec, log := helperSpec(t, mode)
		spec.TempDir = ""
		spec.Dir = t.TempDir()
		p := startHelper(t, spec)
		waitLog(t, log, "ready\n")
		return p, log
	}

	orphan, _ := start("sleep")
	orphanRec := record("orphan", orphan.PID(), orphan.CreateTimeMS())

	stubborn, _ := start("ignore-term")
	stubbornRec := record("stubborn", stubborn.PID(), stubborn.CreateTimeMS())

	// A live group leader whose create time does not match: the PID was
	// "reused". It must not be signalled.
	reused, reusedLog := start("watch")
	reusedRec := record("reused", reused.PID(), reused.CreateTimeMS()-3_600_000)

	// Our own PID with a wrong create time, as the brief has it.
	selfRec := record("self", os.Getpid(), 12345)

	// A replica that is gone.
	spec, _ := helperSpec(t, "crash")
	dead := startHelper(t, spec)
	waitDone(t, dead)
	deadRec := record("dead", dead.PID(), dead.CreateTimeMS())

	// A live replica of the current run: record and dir stay.
	liveRec := record("live", os.Getpid(), 0)
	leftover := mkdir("leftover")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rep, err := StateDir{Dir: s.Dir}.CleanOrphans(ctx, tempRoot, map[string]bool{"live": true}, 300*time.Millisecond, log)
	if err != nil {
		t.Fatalf("CleanOrphans: %v", err)
	}

	if got := sortedRecords(rep.Stopped); !slices.Equal(got, []ProcRecord{orphanRec, stubbornRec}) {
		t.Errorf("Stopped = %+v", got)
	}
	if got := sortedRecords(rep.Stale); !slices.Equal(got, []ProcRecord{deadRec, reusedRec, selfRec}) {
		t.Errorf("Stale = %+v", got)
	}
	wantDirs := []string{deadRec.TempDir, leftover, orphanRec.TempDir, reusedRec.TempDir, selfRec.TempDir, stubbornRec.TempDir}
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
	if _, err := os.Stat(liveRec.TempDir); err != nil {
		t.Errorf("kept dir removed: %v", err)
	}
	if recs, err := s.Load(); err != nil || !slices.Equal(recs, []ProcRecord{liveRec}) {
		t.Errorf("records left = %+v, %v; want only the live one", recs, err)
	}

	// The orphans are gone: SIGTERM for one, SIGKILL after grace for the other.
	if st := waitDone(t, orphan); st.Code != 0 {
		t.Errorf("orphan exit = %v, want exit 0 on SIGTERM", st)
	}
	if st := waitDone(t, stubborn); st.Signal != "killed" {
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
	waitLog(t, reusedLog, "winch\n")
	if out := reusedLog.String(); strings.Contains(out, "term") {
		t.Errorf("the process behind a reused PID got SIGTERM: %q", out)
	}
	reused.Stop(0)
}

func TestCleanOrphansNothingToDo(t *testing.T) {
	s := StateDir{Dir: filepath.Join(t.TempDir(), "state")}
	rep, err := s.CleanOrphans(context.Background(), filepath.Join(t.TempDir(), "missing"), nil, time.Second, nil)
	if err != nil || len(rep.Stopped)+len(rep.Stale)+len(rep.RemovedDirs) != 0 {
		t.Errorf("CleanOrphans on nothing = %+v, %v", rep, err)
	}
}

func TestCleanOrphansTempDirOutsideRoot(t *testing.T) {
	s := StateDir{Dir: filepath.Join(t.TempDir(), "state")}
	tempRoot := t.TempDir()
	outside := t.TempDir()
	if err := s.Save(ProcRecord{ID: "r", PID: 0, TempDir: outside}); err != nil {
		t.Fatal(err)
	}
	rep, err := s.CleanOrphans(context.Background(), tempRoot, nil, time.Second, nil)
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
