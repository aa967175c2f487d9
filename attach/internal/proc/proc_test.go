//go:build linux

package proc_test

import (
	"context"
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

	"github.com/musterhq/muster/attach/internal/logrot"
	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/attach/internal/proctest"
	"github.com/musterhq/muster/internal/testutil"
)

func TestProcSleepStop(t *testing.T) {
	spec, log := proctest.Spec(t, "sleep")
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")

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
		t.Errorf("environment is not exactly Spec.Env; log: %q", out)
	}
	if pgid, err := syscall.Getpgid(p.PID()); err != nil || pgid != p.PID() {
		t.Errorf("pgid = %d, %v; want own group %d", pgid, err, p.PID())
	}
	if id := p.Ident(); id.PID != p.PID() || id.StartTicks == 0 {
		t.Errorf("Ident = %+v", id)
	} else if ok, why := id.Check(); !ok {
		t.Errorf("Ident of a live replica does not check: %s", why)
	}
	if st := p.Exit(); !errors.Is(st.Err, proc.ErrRunning) {
		t.Errorf("Exit before Done = %v, want proc.ErrRunning", st)
	}

	st := p.Stop(t.Context(), 5*time.Second)
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
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, proc.ErrDone) {
		t.Errorf("Signal after exit = %v, want proc.ErrDone", err)
	}
	if again := p.Stop(t.Context(), time.Second); again != st {
		t.Errorf("second Stop = %v, want %v", again, st)
	}
}

func TestProcCrash(t *testing.T) {
	spec, log := proctest.Spec(t, "crash")
	p := proctest.Start(t, spec)
	st := proctest.WaitDone(t, p)
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
	spec, log := proctest.Spec(t, "ignore-term")
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")

	const grace = 200 * time.Millisecond
	t0 := time.Now()
	st := p.Stop(t.Context(), grace)
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
			spec, log := proctest.Spec(t, tc.mode, proctest.PidfileEnv+"="+pidfile)
			p := proctest.Start(t, spec)
			gpid := proctest.ReadPidfile(t, pidfile)
			proctest.Track(gpid)
			proctest.WaitLog(t, log, "ready\n")

			var st proc.ExitStatus
			if tc.stop {
				st = p.Stop(t.Context(), 5*time.Second)
			} else {
				st = proctest.WaitDone(t, p)
			}
			if st.Code != tc.wantCode || st.Err != nil {
				t.Errorf("exit = %+v (%v), want exit %d", st, st, tc.wantCode)
			}
			proctest.WaitGone(t, gpid)
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
		{"relative path", "attach-test-program", proc.ErrPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, log := proctest.Spec(t, "sleep")
			spec.Path = tc.path
			p, err := proc.Start(spec)
			if err == nil {
				proctest.Track(p.PID())
				p.Stop(t.Context(), time.Second)
				t.Fatal("Start succeeded")
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
	spec, log := proctest.Spec(t, "ignore-term")
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")

	var wg sync.WaitGroup
	results := make([]proc.ExitStatus, 8)
	for i := range results {
		wg.Go(func() {
			_ = p.Signal(syscall.SIGTERM)
			results[i] = p.Stop(t.Context(), 100*time.Millisecond)
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
	spec, _ := proctest.Spec(t, "sleep")
	spec.Log = nil
	workDir := t.TempDir()
	spec.Dir = workDir
	p := proctest.Start(t, spec)
	if _, err := os.Stat(spec.TempDir); err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	// Without a log there is no "ready": stop it whenever.
	st := p.Stop(t.Context(), 5*time.Second)
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

func TestProcOutputIntoLogrot(t *testing.T) {
	const (
		maxBytes = 16 << 10
		keep     = 2
		total    = 200 << 10
	)
	path := filepath.Join(t.TempDir(), "logs", "replica.log")
	rf, err := logrot.Open(path, maxBytes, keep)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := proctest.Spec(t, "spam", proctest.SpamBytesEnv+"="+strconv.Itoa(total))
	spec.Log = rf
	p := proctest.Start(t, spec)
	// "done" follows the spam, so once it is in the current file all is in.
	waitFile(t, path, "done\n")
	st := p.Stop(t.Context(), 5*time.Second)
	if st.Code != 0 || st.Err != nil {
		t.Errorf("Stop = %v", st)
	}
	if _, err := rf.Write([]byte("x")); !errors.Is(err, logrot.ErrClosed) {
		t.Errorf("log still open after exit: write err %v", err)
	}
	for i := 0; i <= keep+1; i++ {
		name := path
		if i > 0 {
			name += "." + strconv.Itoa(i)
		}
		fi, err := os.Stat(name)
		switch {
		case i == keep+1:
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists beyond keep=%d (err %v)", name, keep, err)
			}
		case err != nil:
			t.Error(err)
		case fi.Size() > maxBytes:
			t.Errorf("%s has %d bytes, max %d", name, fi.Size(), maxBytes)
		}
	}
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

func TestProcStopHonoursContext(t *testing.T) {
	spec, log := proctest.Spec(t, "ignore-term")
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	st := p.Stop(ctx, time.Hour)
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("Stop with a 100ms context and an hour's grace took %v", took)
	}
	if st.Signal != "killed" {
		t.Errorf("Stop = %v, want killed once the context ended", st)
	}
}

func TestProcKill(t *testing.T) {
	spec, log := proctest.Spec(t, "ignore-term")
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")
	p.Kill()
	if st := proctest.WaitDone(t, p); st.Signal != "killed" {
		t.Errorf("exit = %v, want killed", st)
	}
	p.Kill() // after the reap: signals nothing
}

func TestIdentCheck(t *testing.T) {
	spec, log := proctest.Spec(t, "sleep")
	spec.TempDir = ""
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")
	live := p.Ident()
	self, err := proc.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   proc.Ident
		want bool
	}{
		{"live replica", live, true},
		{"other start ticks (a reused pid)", proc.Ident{PID: live.PID, StartTicks: live.StartTicks + 1, BootID: live.BootID}, false},
		{"no start ticks (an older record)", proc.Ident{PID: live.PID, BootID: live.BootID}, false},
		{"another boot", proc.Ident{PID: live.PID, StartTicks: live.StartTicks, BootID: live.BootID + "x"}, false},
		{"pid 0", proc.Ident{PID: 0, StartTicks: 1, BootID: live.BootID}, false},
		{"pid 1 (kill(-1) would hit everyone)", proc.Ident{PID: 1, StartTicks: 1, BootID: live.BootID}, false},
		{"ourselves", proc.Ident{PID: os.Getpid(), StartTicks: self.StartTicks, BootID: live.BootID}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ok, why := tc.id.Check(); ok != tc.want {
				t.Errorf("Check(%+v) = %v (%s), want %v", tc.id, ok, why, tc.want)
			}
		})
	}
	p.Stop(t.Context(), 5*time.Second)
	if ok, _ := live.Check(); ok {
		t.Error("Check of an exited replica = true")
	}
}

func TestStopGroup(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want string // how the leader ends
	}{
		{"sleep", "exit 0"},
		{"ignore-term", "signal killed"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			spec, log := proctest.Spec(t, tc.mode)
			p := proctest.Start(t, spec)
			proctest.WaitLog(t, log, "ready\n")
			if err := proc.StopGroup(t.Context(), p.PID(), 200*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if st := proctest.WaitDone(t, p); st.String() != tc.want {
				t.Errorf("exit = %v, want %s", st, tc.want)
			}
			if err := proc.StopGroup(t.Context(), p.PID(), time.Second); err != nil {
				t.Errorf("StopGroup of a gone group = %v", err)
			}
		})
	}
}

// Spec.Files are in the temp dir, mode 0600, when the process starts;
// a name that is not a plain file name fails the start and leaves no dir.
func TestProcFiles(t *testing.T) {
	spec, log := proctest.Spec(t, "sleep")
	spec.Files = map[string][]byte{".secret": []byte("s3cret")}
	p := proctest.Start(t, spec)
	proctest.WaitLog(t, log, "ready\n")
	path := filepath.Join(spec.TempDir, ".secret")
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "s3cret" {
		t.Fatalf("file = %q, %v", b, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", st.Mode().Perm())
	}
	p.Stop(t.Context(), 5*time.Second)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there after exit: %v", err)
	}

	for _, name := range []string{"../escape", "a/b", "", ".."} {
		bad, _ := proctest.Spec(t, "sleep")
		bad.Files = map[string][]byte{name: nil}
		if p, err := proc.Start(bad); err == nil {
			p.Stop(t.Context(), 5*time.Second)
			t.Errorf("Start with file %q succeeded", name)
		} else if _, serr := os.Stat(bad.TempDir); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("file %q: temp dir left behind: %v", name, serr)
		}
	}
}
