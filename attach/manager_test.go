//go:build linux

package attach

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/attach/internal/proctest"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/testutil"
)

// testConfig writes an attach config whose services run this test binary
// in a worker helper mode, and loads it. Each service line is
// "SERVICE MODE key: value, key: value".
func testConfig(t *testing.T, maxReplicas int, services ...string) *Config {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "host:\n  name: t-%d\n  max_replicas: %d\n  state_dir: %s/state\n  temp_dir: %s/tmp\n  log_dir: %s/logs\n  heartbeat: 200ms\n  grace: 2s\nservices:\n",
		time.Now().UnixNano()%1e9, maxReplicas, dir, dir, dir)
	for _, s := range services {
		f := strings.SplitN(s, " ", 3)
		fmt.Fprintf(&b, "  - service: %s\n    program: %s\n    args: [\"-test.run=^$\"]\n    env: {%s: %s, %s: %q, GORACE: \"atexit_sleep_ms=0\"}\n", f[0], exe, proctest.HelperEnv, f[1], pidDirEnv, os.Getenv(pidDirEnv))
		if len(f) == 3 {
			for _, kv := range strings.Split(f[2], ",") {
				fmt.Fprintf(&b, "    %s\n", strings.TrimSpace(kv))
			}
		}
	}
	path := filepath.Join(dir, "attach.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	return cfg
}

func startManager(t *testing.T, e *harness.Env, cfg *Config) *Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := Start(ctx, e.NC, cfg, Options{Conn: natsconn.Config{URL: e.Server.ClientURL()}, Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, m); assertNoLeftovers(t, cfg) })
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error { // the broker sees the ATTACH registration
		for _, s := range e.Broker.Stats(ctx) {
			if s.Service == cfg.Services[0].Service {
				return nil
			}
		}
		return errors.New("broker does not see the attach manager")
	})
	return m
}

// shutdown shuts m down, failing the test if that takes over a minute.
func shutdown(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

// assertNoLeftovers checks that no replica process, temp dir or state
// record of cfg's manager is left.
func assertNoLeftovers(t *testing.T, cfg *Config) {
	t.Helper()
	if ents, _ := os.ReadDir(cfg.Host.TempDir); len(ents) > 0 {
		t.Errorf("temp dirs left: %v", ents)
	}
	if recs, _, err := Leftovers(cfg); recs > 0 || err != nil {
		t.Errorf("%d state records left (%v)", recs, err)
	}
}

func alive(m *Manager) int { return m.Info().Replicas }

func TestColdStartAndIdleScaleDownToZero(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ECHO/COLD worker-echo max: 2, idle_timeout: 500ms")
	m := startManager(t, e, cfg)
	if n := alive(m); n != 0 {
		t.Fatalf("%d replicas before any call", n)
	}
	start := time.Now()
	got, err := e.Client.Call(testutil.Context(t, 20*time.Second), "T/ECHO/COLD", []byte("hello"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("cold call: %q %v", got, err)
	}
	t.Logf("cold start (zero replicas → first reply): %v", time.Since(start))
	if n := alive(m); n != 1 {
		t.Fatalf("%d replicas after one call, want 1", n)
	}
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n := alive(m); n != 0 {
			return fmt.Errorf("%d replicas still alive after the idle timeout", n)
		}
		return nil
	})
	assertNoLeftovers(t, cfg)
}

func TestBurstNeverExceedsMax(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 16, "T/ECHO/BURST worker-echo max: 4, idle_timeout: 30s")
	m := startManager(t, e, cfg)
	ctx := testutil.Context(t, 60*time.Second)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprint(i)
			got, err := e.Client.Call(ctx, "T/ECHO/BURST", []byte(want))
			if err == nil && string(got) != want {
				err = fmt.Errorf("call %d got %q", i, got)
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed < 5 {
				t.Error(err)
			}
		}
	}
	c := m.Counters()["T/ECHO/BURST"]
	if failed > 0 || c.HighWater > 4 || c.HighWater < 1 {
		t.Fatalf("%d of %d calls failed; replicas alive at most %d (max 4); counters %+v", failed, n, c.HighWater, c)
	}
	t.Logf("burst of %d: started %d replicas, at most %d alive", n, c.Started, c.HighWater)
}

func TestIdleScaleDownToMin(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ECHO/MIN worker-echo min: 1, max: 3, idle_timeout: 300ms")
	m := startManager(t, e, cfg)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := m.Info().Replicas - m.Info().Starting; n != 1 {
			return fmt.Errorf("%d registered replicas at start, want min 1", n)
		}
		return nil
	})
	// Load it so more replicas start, then let them idle out.
	ctx := testutil.Context(t, 30*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.Client.Call(ctx, "T/ECHO/MIN", []byte("x")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := alive(m); n != 1 {
			return fmt.Errorf("%d replicas alive, want min 1", n)
		}
		return nil
	})
}

func TestCrashLoopMarksServiceFailing(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/CRASH/START worker-crash max: 2")
	m := startManager(t, e, cfg)
	start := time.Now()
	_, err := e.Client.Call(testutil.Context(t, 30*time.Second), "T/CRASH/START", []byte("x"))
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeServiceFailing || !strings.Contains(pe.Description, "before it registered") {
		t.Fatalf("err %v, want 0900/0004 with the reason", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("failing reported after %v, want seconds", d)
	}
	t.Logf("crash loop reported after %v: %v", time.Since(start), err)
	if f := m.Info().Failing["T/CRASH/START"]; f == "" {
		t.Fatal("registration does not say failing")
	}
	// New calls are answered at once while it is failing.
	start = time.Now()
	if _, err := e.Client.Call(testutil.Context(t, 30*time.Second), "T/CRASH/START", nil); !errors.Is(err, proto.ErrServiceFailing) || time.Since(start) > time.Second {
		t.Fatalf("second call: %v after %v", err, time.Since(start))
	}
}

func TestStartTimeoutKillsSilentReplica(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/SILENT/X worker-silent max: 1, start_timeout: 300ms")
	m := startManager(t, e, cfg)
	_, err := e.Client.Call(testutil.Context(t, 30*time.Second), "T/SILENT/X", nil)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeServiceFailing || !strings.Contains(pe.Description, "start timeout") {
		t.Fatalf("err %v, want 0900/0004 naming the start timeout", err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := alive(m); n != 0 {
			return fmt.Errorf("%d silent replicas still alive", n)
		}
		return nil
	})
}

// TestHungReplicaIsKilled: a replica that registered, then stopped
// (SIGSTOP: no heartbeat, no answer to PING) is killed as hung.
func TestHungReplicaIsKilled(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/HANG/X worker-freeze min: 1, max: 1")
	m := startManager(t, e, cfg)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if c := m.Counters()["T/HANG/X"]; c.Hung < 1 || c.Pinged < hungAfterPings {
			return fmt.Errorf("counters %+v: no hung replica killed yet", c)
		}
		return nil
	})
}

// TestStaleButAnsweringReplicaKept: a replica whose registration writes
// stop reaching the manager (it registers once, then writes its record
// only every 30s) but whose process lives and answers PING on its private
// subject is never killed.
func TestStaleButAnsweringReplicaKept(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/STALE/X worker-hang min: 1, max: 1")
	m := startManager(t, e, cfg)
	var pid int
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, r := range m.reps {
			if r.registered && r.proc != nil {
				pid = r.proc.PID()
				return nil
			}
		}
		return errors.New("no registered replica yet")
	})
	// Heartbeats are 200ms: stale after 600ms; then PINGed every 500ms.
	// Watch it through several PINGs: it must answer them and live on.
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		c := m.Counters()["T/STALE/X"]
		if c.Hung > 0 || c.Started != 1 || c.Exited > 0 {
			t.Fatalf("counters %+v: the answering replica was stopped", c)
		}
		if c.Pinged < 4 {
			return fmt.Errorf("pinged %d times, want 4", c.Pinged)
		}
		return nil
	})
	if st, err := proc.ReadStat(pid); err != nil || st.State == 'Z' {
		t.Fatalf("replica %d gone: %v", pid, err)
	}
	got, err := e.Client.Call(testutil.Context(t, 10*time.Second), "T/STALE/X", []byte("still here"))
	if err != nil || string(got) != "still here" {
		t.Fatalf("call: %q %v", got, err)
	}
}

func TestCrashMidConversationRestartsForMin(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/CRASH/MID worker-crash-mid min: 1, max: 1")
	m := startManager(t, e, cfg)
	ctx := testutil.Context(t, 20*time.Second)
	cv, _, err := e.Client.Open(ctx, "T/CRASH/MID", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := cv.Send(ctx, []byte("crash")); !errors.Is(err, proto.ErrLoggedOff) || time.Since(start) > 2*time.Second {
		t.Fatalf("send: %v after %v, want 0003/0012 within 2s", err, time.Since(start))
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if c := m.Counters()["T/CRASH/MID"]; c.Crashed < 1 || c.Started < 2 {
			return fmt.Errorf("counters %+v: want a crash and a restart", c)
		}
		return nil
	})
	if got, err := e.Client.Call(ctx, "T/CRASH/MID", []byte("again")); err != nil || string(got) != "again" {
		t.Fatalf("after restart: %q %v", got, err)
	}
}

func TestShutdownStopsEverything(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	pidfile := filepath.Join(t.TempDir(), "gc.pid")
	cfg := testConfig(t, 8, "T/ECHO/SHUT worker-echo min: 2, max: 2", "T/GC/X worker-grandchild min: 1, max: 1")
	cfg.Services[1].Env[proctest.PidfileEnv] = pidfile
	m := startManager(t, e, cfg)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if i := m.Info(); i.Replicas != 3 || i.Starting != 0 {
			return fmt.Errorf("%d replicas, %d starting", i.Replicas, i.Starting)
		}
		if _, err := os.Stat(pidfile); err != nil {
			return err
		}
		return nil
	})
	b, _ := os.ReadFile(pidfile)
	var gc int
	fmt.Sscan(string(b), &gc)
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := alive(m); n != 0 {
		t.Fatalf("%d replicas after shutdown", n)
	}
	if _, err := m.attKV.Get(context.Background(), m.ID()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("ATTACH registration after shutdown: %v", err)
	}
	if st, err := proc.ReadStat(gc); gc <= 0 || err == nil && st.State != 'Z' {
		t.Fatalf("grandchild %d survived the shutdown (%c)", gc, st.State)
	}
	assertNoLeftovers(t, cfg)
}

func TestShutdownKillsReplicaIgnoringSIGTERM(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/STUBBORN/X worker-ignore-term min: 1, max: 1")
	cfg.Host.Grace = 300 * time.Millisecond
	m := startManager(t, e, cfg)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if i := m.Info(); i.Replicas != 1 || i.Starting != 0 {
			return fmt.Errorf("%d replicas, %d starting", i.Replicas, i.Starting)
		}
		return nil
	})
	start := time.Now()
	shutdown(t, m)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v with a 300ms grace", d)
	}
	if n := alive(m); n != 0 {
		t.Fatalf("%d replicas after shutdown", n)
	}
}

func TestCrashedReplicaRestartedAfterBackoff(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/CRASH/RESTART worker-crash-mid max: 1, restart: on-failure")
	m := startManager(t, e, cfg)
	ctx := testutil.Context(t, 20*time.Second)
	cv, _, err := e.Client.Open(ctx, "T/CRASH/RESTART", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cv.Send(ctx, []byte("crash")); !errors.Is(err, proto.ErrLoggedOff) {
		t.Fatalf("send: %v", err)
	}
	// min is 0: only the restart policy brings it back.
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		c := m.Counters()["T/CRASH/RESTART"]
		if c.Crashed < 1 || c.Started < 2 || m.Info().Replicas != 1 {
			return fmt.Errorf("counters %+v, %d alive: want a crash and a restart", c, m.Info().Replicas)
		}
		return nil
	})
	if c := m.Counters()["T/CRASH/RESTART"]; c.LastExit != "exit 2" {
		t.Fatalf("last exit %q, want exit 2", c.LastExit)
	}
}

// TestStartFailureCleansUp: a Start that fails returns its error (no
// panic) and leaves no goroutine, subscription, temp dir or process behind.
func TestStartFailureCleansUp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, js jetstream.JetStream, cfg *Config)
		want  string
	}{
		{"state dir under a file", func(t *testing.T, _ jetstream.JetStream, cfg *Config) {
			cfg.Host.StateDir = "/dev/null/state"
		}, "/dev/null"},
		{"registration refused", func(t *testing.T, js jetstream.JetStream, _ *Config) {
			refuseRegistrations(t, js)
		}, "attach: register"},
		{"start context over", nil, "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Checked last, once the server and connection are gone too.
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
			s := testutil.StartNATS(t)
			nc := testutil.Connect(t, s)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(t, 8, "T/ECHO/FAIL worker-echo min: 1, max: 1")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if tc.setup != nil {
				tc.setup(t, js, cfg)
			} else {
				cancel()
			}
			subs := nc.NumSubscriptions()
			m, err := Start(ctx, nc, cfg, Options{Conn: natsconn.Config{URL: s.ClientURL()}, Logger: harness.Quiet})
			if err == nil || m != nil {
				t.Fatalf("Start = %v, %v; want an error", m, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %q does not name %q", err, tc.want)
			}
			if n := nc.NumSubscriptions(); n != subs {
				t.Errorf("%d subscriptions after a failed Start, %d before", n, subs)
			}
			if ents, _ := os.ReadDir(cfg.Host.TempDir); len(ents) > 0 {
				t.Errorf("temp dirs left: %v", ents)
			}
		})
	}
}

// TestShutdownHonoursContext: when Shutdown's context ends, the replicas
// still in their grace period are killed at once and Shutdown returns.
func TestShutdownHonoursContext(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/STUBBORN/CTX worker-ignore-term min: 1, max: 1")
	cfg.Host.Grace = time.Minute
	m := startManager(t, e, cfg)
	var pid int
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, r := range m.reps {
			if r.registered && r.proc != nil {
				pid = r.proc.PID()
				return nil
			}
		}
		return errors.New("no registered replica yet")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	returned := make(chan struct{})
	start := time.Now()
	var err error
	go func() { defer close(returned); err = m.Shutdown(ctx) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatalf("Shutdown with a 300ms context still running after 10s (grace 1m)")
	}
	t.Logf("Shutdown returned after %v: %v", time.Since(start), err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the context's error", err)
	}
	proctest.WaitGone(t, pid)
	// The manager's goroutines end by themselves soon after; a second
	// Shutdown waits for them.
	if err := m.Shutdown(testutil.Context(t, 20*time.Second)); err != nil {
		t.Fatalf("second Shutdown = %v", err)
	}
}

// refuseRegistrations creates the attach bucket with a value size no
// registration fits.
func refuseRegistrations(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	if _, err := js.CreateKeyValue(testutil.Context(t, 10*time.Second), jetstream.KeyValueConfig{Bucket: proto.AttachBucket, MaxValueSize: 16}); err != nil {
		t.Fatal(err)
	}
}

// TestNATSRestartKillsNoHealthyReplica: while NATS is down for longer than
// three heartbeats, and while the KV watch catches up after it is back, no
// registration write reaches the manager; its replicas live and answer
// PING once they have reconnected, so none is killed.
func TestNATSRestartKillsNoHealthyReplica(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s, testutil.Reconnecting...)
	cfg := testConfig(t, 8, "T/RESTART/X worker-echo min: 2, max: 2")
	m, err := Start(testutil.Context(t, 10*time.Second), nc, cfg, Options{Conn: natsconn.Config{URL: s.ClientURL()}, Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	recs := replicaRecords(t, m, cfg, 2)
	down := 4 * cfg.Host.Heartbeat // the records are stale before the server is back
	s = testutil.RestartNATS(t, s, func() {
		deadline := time.Now().Add(down)
		testutil.CheckFor(t, 2*down, 20*time.Millisecond, func() error {
			if c := m.Counters()["T/RESTART/X"]; c.Hung > 0 || c.Exited > 0 {
				t.Fatalf("counters %+v: a replica was stopped while NATS was down", c)
			}
			if time.Now().Before(deadline) {
				return errors.New("NATS still down")
			}
			return nil
		})
	})
	// Back: the replicas reconnect, answer PING and write their records again.
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if c := m.Counters()["T/RESTART/X"]; c.Hung > 0 || c.Exited > 0 || c.Started != 2 {
			t.Fatalf("counters %+v: a healthy replica was stopped after the restart", c)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, r := range m.reps {
			if time.Since(r.lastBeat) > 3*cfg.Host.Heartbeat {
				return fmt.Errorf("replica %s: no heartbeat for %v", r.id, time.Since(r.lastBeat))
			}
		}
		return nil
	})
	for _, r := range recs {
		if !running(r.PID) {
			t.Errorf("replica %s gone after the restart", r.ID)
		}
	}
	t.Logf("counters after the restart: %+v", m.Counters()["T/RESTART/X"])
	shutdown(t, m) // before the restarted server goes (its cleanup runs first)
	assertNoLeftovers(t, cfg)
}

// A replica whose credentials cannot be made is not started: the start
// fails like any other (the service goes failing after FailAfter tries,
// its callers get 0900/0004 naming the reason) and nothing is left behind.
func TestReplicaCredsFailureFailsTheStart(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/NOCREDS/X worker-echo max: 1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var asked atomic.Int32
	m, err := Start(ctx, e.NC, cfg, Options{Conn: natsconn.Config{URL: e.Server.ClientURL()}, Logger: harness.Quiet,
		ReplicaCreds: func(id, service string) ([]byte, error) {
			asked.Add(1)
			return nil, errors.New("signer unavailable")
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, m); assertNoLeftovers(t, cfg) })
	_, err = e.Client.Call(testutil.Context(t, 30*time.Second), "T/NOCREDS/X", nil)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeServiceFailing || !strings.Contains(pe.Description, "signer unavailable") {
		t.Fatalf("err %v, want 0900/0004 naming the credentials failure", err)
	}
	if asked.Load() == 0 {
		t.Fatal("the signer was never asked")
	}
	if n := alive(m); n != 0 {
		t.Fatalf("%d replicas alive without credentials", n)
	}
}
