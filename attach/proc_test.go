package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/internal/testutil"
)

func TestProcSleepStop(t *testing.T) {
	spec, log := helperSpec(t, "sleep")
	before := time.Now()
	p := startHelper(t, spec)
	waitLog(t, log, "ready\n")

	fi, err := os.Stat(spec.TempDir)
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("temp dir mode = %v, want 0700", perm)
	}
	out := log.String()
	if !strings.Contains(out, "cwd="+spec.TempDir+"\n") {
		t.Errorf("working dir is not the temp dir %s; log: %q", spec.TempDir, out)
	}
	if !strings.Contains(out, fmt.Sprintf("env=%d\n", len(spec.Env))) {
		t.Errorf("environment is not exactly ProcSpec.Env; log: %q", out)
	}
	if pgid, err := syscall.Getpgid(p.PID()); err != nil || pgid != p.PID() {
		t.Errorf("pgid = %d, %v; want own group %d", pgid, err, p.PID())
	}
	if p.StartTime().Before(before) || p.StartTime().After(time.Now()) {
		t.Errorf("StartTime %v not within the start", p.StartTime())
	}
	// gopsutil's create time has whole-second precision on Linux.
	if d := p.CreateTimeMS() - p.StartTime().UnixMilli(); d < -2000 || d > 1000 {
		t.Errorf("CreateTimeMS %d is %d ms from StartTime", p.CreateTimeMS(), d)
	}
	if st := p.Exit(); !errors.Is(st.Err, ErrProcRunning) {
		t.Errorf("Exit before Done = %v, want ErrProcRunning", st)
	}

	st := p.Stop(5 * time.Second)
	if st.Code != 0 || st.Signal != "" || st.Err != nil || st.String() != "exit 0" {
		t.Errorf("Stop = %+v (%v), want a clean exit 0", st, st)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if _, err := os.Stat(spec.TempDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir still there after exit: %v", err)
	}
	if n := log.Closes(); n != 1 {
		t.Errorf("log closed %d times, want 1", n)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, ErrProcDone) {
		t.Errorf("Signal after exit = %v, want ErrProcDone", err)
	}
	if again := p.Stop(time.Second); again != st {
		t.Errorf("second Stop = %v, want %v", again, st)
	}
}

func TestProcCrash(t *testing.T) {
	spec, log := helperSpec(t, "crash")
	p := startHelper(t, spec)
	st := waitDone(t, p)
	if st.Code != 3 || st.Signal != "" || st.Err != nil || st.String() != "exit 3" {
		t.Errorf("exit = %+v (%v), want exit 3", st, st)
	}
	if !strings.Contains(log.String(), "boom") {
		t.Errorf("stderr not in log: %q", log.String())
	}
	if n := log.Closes(); n != 1 {
		t.Errorf("log closed %d times, want 1", n)
	}
	if _, err := os.Stat(spec.TempDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir still there after exit: %v", err)
	}
}

func TestProcStopEscalatesToKill(t *testing.T) {
	spec, log := helperSpec(t, "ignore-term")
	p := startHelper(t, spec)
	waitLog(t, log, "ready\n")

	const grace = 200 * time.Millisecond
	t0 := time.Now()
	st := p.Stop(grace)
	took := time.Since(t0)
	if st.Signal != "killed" || st.Code != -1 || st.String() != "signal killed" {
		t.Errorf("Stop = %+v (%v), want killed by SIGKILL", st, st)
	}
	if took < grace || took > grace+3*time.Second {
		t.Errorf("Stop took %v with grace %v", took, grace)
	}
}

func TestProcKillsGrandchildren(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     string
		stop     bool
		wantCode int
	}{
		{"stopped", "grandchild", true, 0},
		{"leader exits by itself", "grandchild-exit", false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidfile := filepath.Join(t.TempDir(), "grandchild.pid")
			spec, log := helperSpec(t, tc.mode, pidfileEnv+"="+pidfile)
			p := startHelper(t, spec)
			gpid := readPidfile(t, pidfile)
			trackChild(gpid)
			waitLog(t, log, "ready\n")

			var st ExitStatus
			if tc.stop {
				st = p.Stop(5 * time.Second)
			} else {
				st = waitDone(t, p)
			}
			if st.Code != tc.wantCode || st.Err != nil {
				t.Errorf("exit = %+v (%v), want exit %d", st, st, tc.wantCode)
			}
			waitGone(t, gpid)
			if _, err := os.Stat(spec.TempDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temp dir still there after exit: %v", err)
			}
		})
	}
}

func TestProcStartFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		path string
		want error
	}{
		{"missing program", "/nonexistent/attach-test-program", os.ErrNotExist},
		{"relative path", "attach-test-program", ErrProcPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, log := helperSpec(t, "sleep")
			spec.Path = tc.path
			p, err := StartProc(spec)
			if err == nil {
				trackChild(p.PID())
				p.Stop(time.Second)
				t.Fatal("StartProc succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), "attach: ") {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(spec.TempDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temp dir left behind: %v", err)
			}
			if n := log.Closes(); n != 1 {
				t.Errorf("log closed %d times, want 1", n)
			}
		})
	}
}

func TestProcConcurrentStop(t *testing.T) {
	spec, log := helperSpec(t, "ignore-term")
	p := startHelper(t, spec)
	waitLog(t, log, "ready\n")

	var wg sync.WaitGroup
	results := make([]ExitStatus, 8)
	for i := range results {
		wg.Go(func() {
			_ = p.Signal(syscall.SIGTERM)
			results[i] = p.Stop(100 * time.Millisecond)
			_ = p.Signal(syscall.SIGTERM)
		})
	}
	wg.Wait()
	for i, st := range results {
		if st != results[0] || st.Signal != "killed" {
			t.Errorf("Stop #%d = %v, want all killed and equal (first %v)", i, st, results[0])
		}
	}
}

func TestProcNilLogAndDir(t *testing.T) {
	spec, _ := helperSpec(t, "sleep")
	spec.Log = nil
	workDir := t.TempDir()
	spec.Dir = workDir
	p := startHelper(t, spec)
	if _, err := os.Stat(spec.TempDir); err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	// Without a log there is no "ready": stop it whenever.
	st := p.Stop(5 * time.Second)
	if st.Err != nil || (st.Code != 0 && st.Signal != "terminated") {
		t.Errorf("Stop = %v", st)
	}
	if _, err := os.Stat(workDir); err != nil {
		t.Errorf("working dir (not ours) was removed: %v", err)
	}
	if _, err := os.Stat(spec.TempDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir still there after exit: %v", err)
	}
}

func TestProcOutputIntoRotatingFile(t *testing.T) {
	const (
		maxBytes = 16 << 10
		keep     = 2
		total    = 200 << 10
	)
	path := filepath.Join(t.TempDir(), "logs", "replica.log")
	rf, err := OpenRotatingFile(path, maxBytes, keep)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := helperSpec(t, "spam", spamBytesEnv+"="+strconv.Itoa(total))
	spec.Log = rf
	p := startHelper(t, spec)
	// "done" follows the spam, so once it is in the current file all is in.
	waitFile(t, path, "done\n")
	st := p.Stop(5 * time.Second)
	if st.Code != 0 || st.Err != nil {
		t.Errorf("Stop = %v", st)
	}
	if _, err := rf.Write([]byte("x")); !errors.Is(err, ErrLogClosed) {
		t.Errorf("log still open after exit: write err %v", err)
	}
	checkRotated(t, path, maxBytes, keep)
}

// waitFile waits until the file at path contains want.
func waitFile(t testing.TB, path, want string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), want) {
			return fmt.Errorf("%s lacks %q", path, want)
		}
		return nil
	})
}
