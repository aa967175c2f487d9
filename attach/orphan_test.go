//go:build linux

package attach

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/attach/internal/proctest"
	"github.com/musterhq/muster/attach/internal/statedir"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// managerProcess runs an attach manager for cfg as a separate process (see
// managerHelper) against e's NATS, and returns once it is ready, with a
// channel closed when it has exited.
func managerProcess(t *testing.T, e *harness.Env, cfg *Config) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), proctest.HelperEnv+"=manager", "ATTACH_TEST_CONFIG="+cfg.File, "MUSTER_URL="+e.Server.ClientURL(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatal("manager process exited before it was ready")
	case <-time.After(15 * time.Second):
		t.Fatal("manager process not ready")
	}
	return cmd, exited
}

// orphansOf runs a manager process for cfg until every service has its
// min replicas registered, kills it with SIGKILL and returns the state
// records of its replicas, which live on as orphans.
func orphansOf(t *testing.T, e *harness.Env, cfg *Config, before func()) []statedir.Record {
	t.Helper()
	cmd, exited := managerProcess(t, e, cfg)
	want := 0
	for _, s := range cfg.Services {
		want += s.Min
	}
	var recs []statedir.Record
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if recs, _ = statedir.Dir(cfg.Host.StateDir).Load(); len(recs) != want {
			return fmt.Errorf("%d state records, want %d", len(recs), want)
		}
		stats := map[string]int{}
		for _, s := range e.Broker.Stats(testutil.Context(t, 5*time.Second)) {
			stats[s.Service] = s.Replicas
		}
		for _, s := range cfg.Services {
			if stats[s.Service] != s.Min {
				return fmt.Errorf("%s: %d replicas registered, want %d", s.Service, stats[s.Service], s.Min)
			}
		}
		return nil
	})
	if before != nil {
		before()
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	for _, r := range recs {
		if !running(r.PID) {
			t.Fatalf("replica %d died with its manager; the test needs it orphaned", r.PID)
		}
	}
	return recs
}

// running reports whether pid is alive and not a zombie.
func running(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// TestManagerKilledThenRestartedCleansUp: a manager killed by SIGKILL
// leaves idle and busy replicas behind. The next manager on the same state
// registers and serves at once, before the busy orphans are gone (their
// clean-up is off the start path and all at once); idle orphans are gone
// within 1s, busy ones within their grace; their temp dirs go, and so does
// the temp dir of a start the crash cut short. A dir no record names is
// left alone.
func TestManagerKilledThenRestartedCleansUp(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ORPHAN/IDLE worker-echo min: 2, max: 2", "T/ORPHAN/BUSY worker-echo min: 3, max: 3")
	ctx := testutil.Context(t, 60*time.Second)
	var convs []*client.Conv
	recs := orphansOf(t, e, cfg, func() {
		for range 3 { // capacity 1: one conversation on each busy replica
			cv, _, err := e.Client.Open(ctx, "T/ORPHAN/BUSY", []byte("hold"))
			if err != nil {
				t.Fatal(err)
			}
			convs = append(convs, cv)
		}
	})
	busy := map[string]bool{}
	for _, r := range recs {
		busy[r.ID] = r.Service == "T/ORPHAN/BUSY"
	}
	reserved := filepath.Join(cfg.Host.TempDir, "reserved-start")
	if err := os.MkdirAll(reserved, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := statedir.Dir(cfg.Host.StateDir).Reserve("reserved-start", "T/ORPHAN/IDLE", reserved); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(cfg.Host.TempDir, "stray-dir") // nobody recorded it: not ours to remove
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}

	cfg.Services[0].Min, cfg.Services[1].Min = 0, 0 // the new run starts nothing of its own
	start := time.Now()
	m := startManager(t, e, cfg) // returns once the broker sees its registration
	serving := time.Since(start)
	t.Cleanup(func() { os.RemoveAll(stray) }) // before startManager's leftover check
	stillBusy := 0
	for _, r := range recs {
		if busy[r.ID] && running(r.PID) {
			stillBusy++
		}
	}
	t.Logf("registered and serving %v after Start began; %d of 3 busy orphans still in their grace", serving, stillBusy)
	if stillBusy == 0 {
		t.Errorf("the busy orphans were gone before the new manager registered (%v): the clean-up is on the start path", serving)
	}
	if serving > time.Second {
		t.Errorf("the new manager took %v to register, want well under 1s", serving)
	}
	gone := func(within time.Duration, which bool) {
		t.Helper()
		testutil.CheckFor(t, within, 10*time.Millisecond, func() error {
			for _, r := range recs {
				if busy[r.ID] == which && running(r.PID) {
					return fmt.Errorf("orphan %s (busy %v, pid %d) still running after %v", r.ID, which, r.PID, time.Since(start))
				}
			}
			return nil
		})
	}
	gone(time.Second, false)
	t.Logf("idle orphans gone %v after Start began", time.Since(start))
	gone(cfg.Host.Grace+stopMargin+time.Second, true)
	t.Logf("busy orphans gone %v after Start began (grace %v)", time.Since(start), cfg.Host.Grace)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, r := range recs {
			if _, err := os.Stat(r.TempDir); !os.IsNotExist(err) {
				return fmt.Errorf("orphan temp dir %s still there", r.TempDir)
			}
		}
		if _, err := os.Stat(reserved); !os.IsNotExist(err) {
			return fmt.Errorf("the reserved start's temp dir is still there")
		}
		if n, _, _ := Leftovers(cfg); n != 0 {
			return fmt.Errorf("%d state records left", n)
		}
		return nil
	})
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("a temp dir no record names was removed: %v", err)
	}
	if n := alive(m); n != 0 {
		t.Errorf("%d replicas in the new run", n)
	}
	for _, cv := range convs { // the busy orphans ended them at their grace
		if _, err := cv.Send(ctx, []byte("x")); err == nil {
			t.Errorf("conversation on a stopped orphan still answers")
		}
	}
}

// TestExampleWorkerFromConfig builds examples/echo-worker and lets a
// manager start it from an attach config, the way a user would.
func TestExampleWorkerFromConfig(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "echo-worker")
	build := exec.Command("go", "build", "-o", bin, "../examples/echo-worker")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build example: %v\n%s", err, out)
	}
	e := harness.Start(t, broker.Config{})
	dir := t.TempDir()
	yaml := fmt.Sprintf("host:\n  name: example\n  state_dir: %s/state\n  temp_dir: %s/tmp\n  log_dir: %s/logs\nservices:\n  - service: EXAMPLE/ECHO/ECHO\n    program: %s\n    max: 2\n    idle_timeout: 30s\n", dir, dir, dir, bin)
	path := filepath.Join(dir, "echo.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	startManager(t, e, cfg)
	ctx := testutil.Context(t, 20*time.Second)
	cv, first, err := e.Client.Open(ctx, "EXAMPLE/ECHO/ECHO", []byte("hi"))
	if err != nil || string(first) != "#1 hi" {
		t.Fatalf("open: %q %v", first, err)
	}
	if got, err := cv.Send(ctx, []byte("there")); err != nil || string(got) != "#2 there" {
		t.Fatalf("send: %q %v", got, err)
	}
	if err := cv.End(ctx); err != nil {
		t.Fatal(err)
	}
	// The replica's output went to its log file.
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		logs, _ := filepath.Glob(filepath.Join(cfg.Host.LogDir, "EXAMPLE_ECHO_ECHO", "*.log"))
		for _, l := range logs {
			if b, _ := os.ReadFile(l); strings.Contains(string(b), "replica ready") {
				return nil
			}
		}
		return fmt.Errorf("no replica log with its output among %v", logs)
	})
}
