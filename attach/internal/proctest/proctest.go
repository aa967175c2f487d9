//go:build unix

package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/internal/testutil"
)

// The environment of a helper process.
const (
	HelperEnv    = "ATTACH_TEST_HELPER"     // the helper mode; unset in the test run itself
	PidfileEnv   = "ATTACH_TEST_PIDFILE"    // where "grandchild" modes write the grandchild's pid
	SpamBytesEnv = "ATTACH_TEST_SPAM_BYTES" // how many bytes "spam" writes
	MaxLife      = 2 * time.Minute          // a helper that nobody stops still goes
)

// RunHelper runs the helper mode named by HelperEnv and exits, if it is
// set; otherwise it returns at once. more runs the modes of the calling
// package (ok false: not one of them).
func RunHelper(more func(mode string) (code int, ok bool)) {
	mode := os.Getenv(HelperEnv)
	if mode == "" {
		return
	}
	if more != nil {
		if code, ok := more(mode); ok {
			os.Exit(code)
		}
	}
	os.Exit(runMode(mode))
}

// Verify returns the exit code of a test binary whose tests returned code:
// 1 if a tracked process is still alive after a bounded wait (it is killed)
// or, when the tests passed, if a goroutine outlived them.
func Verify(code int) int {
	if leaked := childLeaks(5 * time.Second); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "helper processes outlived the tests (killed now): %v\n", leaked)
		for _, pid := range leaked {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

// children records every helper process the tests started (and the
// grandchildren they report), with the start ticks that identify each.
var children = struct {
	sync.Mutex
	start map[int]uint64 // pid → start ticks after boot
}{start: map[int]uint64{}}

// Track adds pid to the processes that must not outlive the tests.
func Track(pid int) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return // already gone
	}
	children.Lock()
	children.start[pid] = st.StartTicks
	children.Unlock()
}

// Alive reports whether pid still names the live (not zombie) process that
// started at startTicks.
func Alive(pid int, startTicks uint64) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X' && st.StartTicks == startTicks
}

// childLeaks waits up to total for every tracked child to be gone and
// returns those that are not.
func childLeaks(total time.Duration) []int {
	children.Lock()
	defer children.Unlock()
	deadline := time.Now().Add(total)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var alive []int
		for pid, start := range children.start {
			if Alive(pid, start) {
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

// MemLog is a proc.Spec.Log that keeps everything in memory and counts
// Close calls.
type MemLog struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closes int
}

func (l *MemLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closes > 0 {
		return 0, errors.New("MemLog: write after close")
	}
	return l.buf.Write(p)
}

func (l *MemLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closes++
	return nil
}

func (l *MemLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Closes is how often Close was called.
func (l *MemLog) Closes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closes
}

// Spec is a proc.Spec that runs the test binary in the given helper mode
// with a temp dir of its own and an in-memory log.
func Spec(t testing.TB, mode string, env ...string) (proc.Spec, *MemLog) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := &MemLog{}
	spec := proc.Spec{
		ID:   strings.ReplaceAll(t.Name(), "/", "_"),
		Path: self,
		// The race runtime sleeps a second at exit unless told not to, which
		// would make a helper outlast a short grace period.
		Env:     append([]string{HelperEnv + "=" + mode, "GORACE=atexit_sleep_ms=0"}, env...),
		TempDir: filepath.Join(t.TempDir(), "replica"),
		Log:     log,
	}
	if d := os.Getenv("GOCOVERDIR"); d != "" {
		spec.Env = append(spec.Env, "GOCOVERDIR="+d)
	}
	return spec, log
}

// Start starts spec, tracks the process for the leak check and stops it at
// the end of the test.
func Start(t testing.TB, spec proc.Spec) *proc.Proc {
	t.Helper()
	p, err := proc.Start(spec)
	if err != nil {
		t.Fatalf("proc.Start: %v", err)
	}
	Track(p.PID())
	t.Cleanup(func() { p.Stop(context.Background(), time.Second) })
	return p
}

// WaitLog waits until the log contains want.
func WaitLog(t testing.TB, log *MemLog, want string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := log.String(); !strings.Contains(s, want) {
			return fmt.Errorf("log lacks %q; has %q", want, s)
		}
		return nil
	})
}

// WaitDone waits, bounded, for p to be done.
func WaitDone(t testing.TB, p *proc.Proc) proc.ExitStatus {
	t.Helper()
	select {
	case <-p.Done():
		return p.Exit()
	case <-time.After(10 * time.Second):
		t.Fatalf("replica %d not done after 10s", p.PID())
		return proc.ExitStatus{}
	}
}

// WaitGone waits until pid no longer names a live process (a zombie counts
// as gone: whoever inherited it may never reap it).
func WaitGone(t testing.TB, pid int) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if st, serr := proc.ReadStat(pid); serr == nil && st.State == 'Z' {
			return nil
		}
		return fmt.Errorf("pid %d still alive (kill 0: %v)", pid, err)
	})
}

// ReadPidfile waits for a helper's pidfile and returns the pid in it.
func ReadPidfile(t testing.TB, path string) int {
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
