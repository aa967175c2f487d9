package attach

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/internal/testutil"
)

// The test binary doubles as a fake worker: with ATTACH_TEST_HELPER set,
// TestMain runs one of these modes instead of the tests.
const (
	helperEnv     = "ATTACH_TEST_HELPER"
	pidfileEnv    = "ATTACH_TEST_PIDFILE"
	spamBytesEnv  = "ATTACH_TEST_SPAM_BYTES"
	helperMaxLife = 2 * time.Minute // a helper that nobody stops still goes
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	pidDir, err := os.MkdirTemp("", "attach-test-pids-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv(pidDirEnv, pidDir)
	code := m.Run()
	deadline := time.Now().Add(5 * time.Second)
	for len(managedLeaks(pidDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if leaked := managedLeaks(pidDir); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "attach: replicas started by managers outlived the tests (killed now): %v\n", leaked)
		for _, pid := range leaked {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	_ = os.RemoveAll(pidDir)
	if leaked := checkChildLeaks(5 * time.Second); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "attach: helper processes outlived the tests (killed now): %v\n", leaked)
		for _, pid := range leaked {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	os.Exit(code)
}

// runHelper is the fake worker. It returns its exit code.
func runHelper(mode string) int {
	switch mode {
	case "sleep":
		// Prints its working directory and environment size, "ready", then
		// waits for SIGTERM and exits 0.
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		wd, _ := os.Getwd()
		fmt.Printf("cwd=%s\nenv=%d\nready\n", wd, len(os.Environ()))
		return waitSignal(term, 0)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		return waitSignal(nil, 0)
	case "watch":
		// Logs every SIGTERM and SIGWINCH it gets and carries on.
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGWINCH)
		fmt.Println("ready")
		deadline := time.After(helperMaxLife)
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGTERM {
					fmt.Println("term")
				} else {
					fmt.Println("winch")
				}
			case <-deadline:
				return 9
			}
		}
	case "crash":
		fmt.Fprintln(os.Stderr, "boom")
		return 3
	case "spam":
		// Writes exactly ATTACH_TEST_SPAM_BYTES bytes of lines, then "done",
		// then waits for SIGTERM.
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		n, _ := strconv.Atoi(os.Getenv(spamBytesEnv))
		if err := spam(n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("done")
		return waitSignal(term, 0)
	case "grandchild", "grandchild-exit":
		// Starts itself in "sleep" mode in the same process group, writes
		// the grandchild's pid to ATTACH_TEST_PIDFILE, prints "ready", then
		// waits for SIGTERM ("grandchild") or exits 3 ("grandchild-exit").
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		gc := exec.Command(self)
		gc.Env = []string{helperEnv + "=sleep", "GORACE=atexit_sleep_ms=0"}
		if d := os.Getenv("GOCOVERDIR"); d != "" {
			gc.Env = append(gc.Env, "GOCOVERDIR="+d)
		}
		gc.Stdout, gc.Stderr = os.Stdout, os.Stderr
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if err := writeFileAtomic(os.Getenv(pidfileEnv), strconv.Itoa(gc.Process.Pid)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("ready")
		if mode == "grandchild-exit" {
			return 3
		}
		return waitSignal(term, 0)
	default:
		if code, ok := workerHelper(mode); ok {
			return code
		}
		fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
		return 2
	}
}

// waitSignal blocks until sig delivers (exit code) or helperMaxLife passes.
func waitSignal(sig <-chan os.Signal, code int) int {
	select {
	case <-sig:
		return code
	case <-time.After(helperMaxLife):
		return 9
	}
}

func spam(n int) error {
	line := []byte(strings.Repeat("x", 99) + "\n")
	for n > 0 {
		k := min(n, len(line))
		chunk := slices.Clone(line[len(line)-k:])
		if _, err := os.Stdout.Write(chunk); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func writeFileAtomic(path, s string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// children records every helper process the tests started (and the
// grandchildren they report), with the start time that identifies each, so
// TestMain can check that none outlived the tests.
var children = struct {
	sync.Mutex
	start map[int]uint64 // pid → start ticks after boot
}{start: map[int]uint64{}}

func trackChild(pid int) {
	st, err := readProcStat(pid)
	if err != nil {
		return // already gone
	}
	children.Lock()
	children.start[pid] = st.StartTicks
	children.Unlock()
}

// childGone reports whether the tracked process is gone: no such pid, a
// zombie nobody reaped yet, or the pid taken by a newer process.
func childGone(pid int, start uint64) bool {
	st, err := readProcStat(pid)
	return err != nil || st.State == 'Z' || st.State == 'X' || st.StartTicks != start
}

// checkChildLeaks waits up to total for every tracked child to be gone and
// returns those that are not.
func checkChildLeaks(total time.Duration) []int {
	children.Lock()
	defer children.Unlock()
	deadline := time.Now().Add(total)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var alive []int
		for pid, start := range children.start {
			if !childGone(pid, start) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			slices.Sort(alive)
			return alive
		}
		<-tick.C
	}
}

// memLog is a ProcSpec.Log that keeps everything in memory and counts Close
// calls.
type memLog struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closes int
}

func (l *memLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closes > 0 {
		return 0, errors.New("memLog: write after close")
	}
	return l.buf.Write(p)
}

func (l *memLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closes++
	return nil
}

func (l *memLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *memLog) Closes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closes
}

// helperSpec is a ProcSpec that runs the test binary in the given helper
// mode with a temp dir of its own and an in-memory log.
func helperSpec(t testing.TB, mode string, env ...string) (ProcSpec, *memLog) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := &memLog{}
	spec := ProcSpec{
		ID:   strings.ReplaceAll(t.Name(), "/", "_"),
		Path: self,
		// The race runtime sleeps a second at exit unless told not to, which
		// would make a helper outlast a short grace period.
		Env:     append([]string{helperEnv + "=" + mode, "GORACE=atexit_sleep_ms=0"}, env...),
		TempDir: filepath.Join(t.TempDir(), "replica"),
		Log:     log,
	}
	if d := os.Getenv("GOCOVERDIR"); d != "" {
		spec.Env = append(spec.Env, "GOCOVERDIR="+d)
	}
	return spec, log
}

// startHelper starts spec, tracks the process for the leak check and stops
// it at the end of the test.
func startHelper(t testing.TB, spec ProcSpec) *Proc {
	t.Helper()
	p, err := StartProc(spec)
	if err != nil {
		t.Fatalf("StartProc: %v", err)
	}
	trackChild(p.PID())
	t.Cleanup(func() { p.Stop(time.Second) })
	return p
}

// waitLog waits until the log contains want.
func waitLog(t testing.TB, log *memLog, want string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := log.String(); !strings.Contains(s, want) {
			return fmt.Errorf("log lacks %q; has %q", want, s)
		}
		return nil
	})
}

// waitDone waits, bounded, for p to be done.
func waitDone(t testing.TB, p *Proc) ExitStatus {
	t.Helper()
	select {
	case <-p.Done():
		return p.Exit()
	case <-time.After(10 * time.Second):
		t.Fatalf("replica %d not done after 10s", p.PID())
		return ExitStatus{}
	}
}

// waitGone waits until pid no longer names a live process (a zombie counts
// as gone: whoever inherited it may never reap it).
func waitGone(t testing.TB, pid int) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if st, serr := readProcStat(pid); serr == nil && st.State == 'Z' {
			return nil
		}
		return fmt.Errorf("pid %d still alive (kill 0: %v)", pid, err)
	})
}

// readPidfile waits for the helper's pidfile and returns the pid in it.
func readPidfile(t testing.TB, path string) int {
	t.Helper()
	var pid int
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(string(b))
		return err
	})
	return pid
}
