//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/testutil"
)

// child is a muster command run as a real process of this test binary.
type child struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// startChild runs `muster args...` as a child process with env added to
// this process's environment, and waits until its stderr contains ready.
func startChild(t *testing.T, ready string, env []string, args ...string) *child {
	t.Helper()
	ch := spawnChild(t, env, args...)
	ch.waitFor(t, ready, 30*time.Second)
	return ch
}

// spawnChild runs `muster args...` as a child process with env added to
// this process's environment; it is killed at the end of the test.
func spawnChild(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	ch := &child{cmd: exec.Command(os.Args[0], args...), stderr: &syncBuffer{}, exited: make(chan struct{})}
	ch.cmd.Env = append(os.Environ(), env...)
	ch.cmd.Stderr = ch.stderr
	if err := ch.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { ch.err = ch.cmd.Wait(); close(ch.exited) }()
	t.Cleanup(func() {
		select {
		case <-ch.exited:
		default:
			_ = ch.cmd.Process.Kill()
			<-ch.exited
		}
	})
	return ch
}

// waitFor waits up to d until the child's stderr contains ready, failing
// the test if it exits first.
func (ch *child) waitFor(t *testing.T, ready string, d time.Duration) {
	t.Helper()
	testutil.CheckFor(t, d, 10*time.Millisecond, func() error {
		select {
		case <-ch.exited:
			t.Fatalf("muster %s exited: %v\n%s", strings.Join(ch.cmd.Args[1:], " "), ch.err, ch.stderr)
		default:
		}
		if !strings.Contains(ch.stderr.String(), ready) {
			return fmt.Errorf("not ready: %s", ch.stderr)
		}
		return nil
	})
}

// signalAndWait sends sig and waits up to 30s for the child to exit,
// returning how it exited.
func (ch *child) signalAndWait(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := ch.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch.exited:
		return ch.err
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s after %v:\n%s", sig, ch.stderr)
		return nil
	}
}

// replicaPIDs lists the PIDs of the live replicas (muster replica ls).
func replicaPIDs(t *testing.T, server string) []int {
	t.Helper()
	var l struct {
		Replicas []picture.Replica `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(run(t, nil, "replica", "ls", server, "--json")), &l); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, r := range l.Replicas {
		pids = append(pids, r.PID)
	}
	return pids
}

// processGone reports whether pid has exited (or is a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// TestSIGHUPStopsGracefully: SIGHUP (a closed terminal) stops `muster up`,
// `muster attach` and `muster broker` as SIGTERM does: exit 0, replicas
// stopped, no state record or temp dir left.
func TestSIGHUPStopsGracefully(t *testing.T) {
	t.Run("up", func(t *testing.T) {
		addr, data, tmp := freeAddr(t), filepath.Join(t.TempDir(), "data"), t.TempDir()
		ch := startChild(t, "try: muster call", []string{"TMPDIR=" + tmp}, "up", "--insecure", "--nats-listen", addr, "--data", data, "--log-level", "warn", "--http", "127.0.0.1:0")
		server := "--server=nats://" + addr
		if got := run(t, nil, "call", server, "--timeout", "20s", demo.EchoService, "hi"); got != "hi\n" {
			t.Fatalf("call: %q", got)
		}
		pids := replicaPIDs(t, server)
		if len(pids) != 1 {
			t.Fatalf("replicas %v, want 1", pids)
		}
		if err := ch.signalAndWait(t, syscall.SIGHUP); err != nil {
			t.Fatalf("up after SIGHUP: %v\n%s", err, ch.stderr)
		}
		assertStopped(t, pids, data, filepath.Join(tmp, "muster-*", "*"))
	})
	t.Run("attach", func(t *testing.T) {
		env := harness.Start(t, broker.Config{})
		path := writeAttachConfig(t, "")
		dir := filepath.Dir(path)
		ch := startChild(t, "serving 1 services", nil, "attach", "--config", path, serverFlag(env), "--log-level", "warn")
		if got, err := env.Client.Call(testutil.Context(t, 20*time.Second), "EXAMPLE/ECHO/ECHO", []byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("call: %q %v", got, err)
		}
		pids := replicaPIDs(t, serverFlag(env))
		if len(pids) != 1 {
			t.Fatalf("replicas %v, want 1", pids)
		}
		if err := ch.signalAndWait(t, syscall.SIGHUP); err != nil {
			t.Fatalf("attach after SIGHUP: %v\n%s", err, ch.stderr)
		}
		assertStopped(t, pids, filepath.Join(dir, "state"), filepath.Join(dir, "tmp", "*"))
	})
	t.Run("broker", func(t *testing.T) {
		s := testutil.StartNATS(t)
		ch := startChild(t, "muster broker ", nil, "broker", "--server", s.ClientURL(), "--log-level", "info")
		if err := ch.signalAndWait(t, syscall.SIGHUP); err != nil {
			t.Fatalf("broker after SIGHUP: %v\n%s", err, ch.stderr)
		}
		if !strings.Contains(ch.stderr.String(), "shutting down") {
			t.Errorf("broker did not shut down in order:\n%s", ch.stderr)
		}
	})
}

// assertStopped checks that every pid is gone and that no replica state
// record (under stateRoot) or temp dir (matching tempGlob) is left.
func assertStopped(t *testing.T, pids []int, stateRoot, tempGlob string) {
	t.Helper()
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("replica %d still running", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	recs, _ := filepath.Glob(filepath.Join(stateRoot, "*", "replicas", "*.json"))
	more, _ := filepath.Glob(filepath.Join(stateRoot, "replicas", "*.json"))
	if len(recs)+len(more) > 0 {
		t.Errorf("state records left: %v %v", recs, more)
	}
	if dirs, _ := filepath.Glob(tempGlob); len(dirs) > 0 {
		t.Errorf("replica temp dirs left: %v", dirs)
	}
}

// TestTwoUpsOneHost: a second `muster up` on the same host, with other
// ports and another data dir, gets its own attach state and temp root: it
// neither stops the first one's replicas nor removes their temp dirs.
func TestTwoUpsOneHost(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr1, data1 := freeAddr(t), filepath.Join(t.TempDir(), "one")
	_, done1 := startUp(t, ctx, "--insecure", "--nats-listen", addr1, "--data", data1, "--log-level", "warn")
	server1 := "--server=nats://" + addr1
	if got := run(t, nil, "call", server1, "--timeout", "20s", demo.EchoService, "one"); got != "one\n" {
		t.Fatalf("first up answered %q", got)
	}
	pids := replicaPIDs(t, server1)
	temps, _ := filepath.Glob(filepath.Join(os.Getenv("TMPDIR"), "muster-*", "*"))
	if len(pids) != 1 || len(temps) != 1 {
		t.Fatalf("first up: replicas %v, temp dirs %v; want one each", pids, temps)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	addr2, data2 := freeAddr(t), filepath.Join(t.TempDir(), "two")
	_, done2 := startUp(t, ctx2, "--insecure", "--nats-listen", addr2, "--data", data2, "--log-level", "warn")
	if got := run(t, nil, "call", "--server=nats://"+addr2, "--timeout", "20s", demo.EchoService, "two"); got != "two\n" {
		t.Fatalf("second up answered %q", got)
	}
	if processGone(pids[0]) {
		t.Error("the second up stopped the first one's replica")
	}
	if _, err := os.Stat(temps[0]); err != nil {
		t.Errorf("the second up removed the first one's replica temp dir: %v", err)
	}
	cancel2()
	if err := waitUp(t, done2); err != nil {
		t.Fatalf("second up returned %v", err)
	}
	if processGone(pids[0]) {
		t.Error("stopping the second up stopped the first one's replica")
	}
	if got := run(t, nil, "call", server1, demo.EchoService, "still"); got != "still\n" {
		t.Errorf("first up answered %q after the second stopped", got)
	}
	cancel()
	if err := waitUp(t, done1); err != nil {
		t.Fatalf("first up returned %v", err)
	}
}

// TestUpSecondSignalStopsAtOnce: the first Ctrl-C on `muster up` says how
// long it will wait for the replicas; a second one stops at once, killing
// a replica that is still busy instead of waiting out its grace.
func TestUpSecondSignalStopsAtOnce(t *testing.T) {
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "data")
	ch := startChild(t, "try: muster call", []string{"TMPDIR=" + t.TempDir()}, "up", "--insecure", "--nats-listen", addr, "--data", data, "--log-level", "warn")
	server := "--server=nats://" + addr

	// A call that keeps its replica busy for a minute, longer than the
	// demo's grace (10s).
	call := exec.Command(os.Args[0], "call", server, "--timeout", "60s", sleepService, "60s")
	if err := call.Start(); err != nil {
		t.Fatal(err)
	}
	callDone := make(chan struct{})
	go func() { _ = call.Wait(); close(callDone) }()
	t.Cleanup(func() { _ = call.Process.Kill(); <-callDone })
	var busy int
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		var l struct {
			Replicas []picture.Replica `json:"replicas"`
		}
		if err := json.Unmarshal([]byte(run(t, nil, "replica", "ls", server, "--json")), &l); err != nil {
			return err
		}
		for _, r := range l.Replicas {
			if r.Service == sleepService && r.Active > 0 {
				busy = r.PID
				return nil
			}
		}
		return fmt.Errorf("no busy sleep replica: %+v", l.Replicas)
	})

	if err := ch.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(ch.stderr.String(), "muster up: stopping: waiting up to 12s for replicas to finish; press Ctrl-C again to stop now") {
			return fmt.Errorf("no stopping notice:\n%s", ch.stderr)
		}
		return nil
	})
	second := time.Now()
	err := ch.signalAndWait(t, syscall.SIGINT)
	if d := time.Since(second); d > 5*time.Second {
		t.Errorf("up took %v to stop after the second Ctrl-C, want at once", d)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(ch.stderr.String(), "stopped at once on a second signal") {
		t.Errorf("up exited with %v, want status 1 saying it stopped at once:\n%s", err, ch.stderr)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !processGone(busy) {
			return fmt.Errorf("busy replica %d still running", busy)
		}
		return nil
	})
}
