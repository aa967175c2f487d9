//go:build linux

package attach

import (
	"bufio"
	"errors"
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
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestManagerKilledThenRestartedCleansUp runs a manager as a separate
// process, kills it with SIGKILL while it has replicas, and checks that a
// new manager on the same state dir stops those orphans and removes their
// temp dirs.
func TestManagerKilledThenRestartedCleansUp(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ORPHAN/X worker-echo min: 2, max: 2")
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
	case <-time.After(15 * time.Second):
		t.Fatal("manager process not ready")
	}
	// Wait for both replicas to be running and recorded.
	var recs []statedir.Record
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		recs, _ = statedir.Dir(cfg.Host.StateDir).Load()
		if len(recs) != 2 {
			return fmt.Errorf("%d state records", len(recs))
		}
		return nil
	})
	// And registered, so the orphans are fully started replicas.
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, s := range e.Broker.Stats(testutil.Context(t, 5*time.Second)) {
			if s.Service == "T/ORPHAN/X" && s.Replicas == 2 {
				return nil
			}
		}
		return errors.New("replicas not registered yet")
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	for _, r := range recs {
		if st, err := proc.ReadStat(r.PID); err != nil || st.State == 'Z' {
			t.Fatalf("replica %d died with its manager; the test needs it orphaned", r.PID)
		}
	}
	// An orphan temp dir with no record, as a crash mid-start leaves.
	stray := filepath.Join(cfg.Host.TempDir, "stray-dir")
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.Services[0].Min = 0 // the new run starts nothing of its own
	m := startManager(t, e, cfg)
	for _, r := range recs {
		if st, err := proc.ReadStat(r.PID); err == nil && st.State != 'Z' {
			t.Errorf("orphan replica %d still running after the restart", r.PID)
		}
		if _, err := os.Stat(r.TempDir); !os.IsNotExist(err) {
			t.Errorf("orphan temp dir %s still there", r.TempDir)
		}
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Errorf("stray temp dir still there")
	}
	if n := alive(m); n != 0 {
		t.Errorf("%d replicas in the new run", n)
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
