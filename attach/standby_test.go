//go:build unix

package attach

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// standbyFigures waits until the brokers see want serving replicas and
// wantStandby parked ones of svc.
func standbyFigures(t *testing.T, e *harness.Env, svc string, want, wantStandby int) {
	t.Helper()
	ctx := testutil.Context(t, 20*time.Second)
	testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		for _, s := range e.Broker.Stats(ctx) {
			if s.Service == svc {
				if s.Replicas != want || s.Standby != wantStandby {
					return fmt.Errorf("%d replicas and %d standby, want %d and %d", s.Replicas, s.Standby, want, wantStandby)
				}
				return nil
			}
		}
		return errors.New("service not seen")
	})
}

// startedCount waits until the manager has counted want processes
// started for svc: the count follows the process's state record, which a
// busy machine may save after the process has registered.
func startedCount(t *testing.T, m *Manager, svc string, want int, what string) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := m.Counters()[svc].Started; n != int64(want) {
			return fmt.Errorf("%d processes started, want %d (%s)", n, want, what)
		}
		return nil
	})
}

// parkedStandby returns the id of the one parked standby of svc.
func parkedStandby(t *testing.T, m *Manager, svc string) string {
	t.Helper()
	var id string
	testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, r := range m.reps {
			if r.svc.cfg.Service == svc && r.standby && r.registered {
				id = r.id
				return nil
			}
		}
		return errors.New("no parked standby yet")
	})
	return id
}

// standbySetup starts a broker and a manager whose service svc keeps one
// standby of the echo worker, and returns them with the parked standby's id.
func standbySetup(t *testing.T, svc, idle string) (*harness.Env, *Manager, string) {
	t.Helper()
	e := harness.Start(t, broker.Config{})
	m := startManager(t, e, testConfig(t, 8, svc+" worker-echo max: 3, standby: 1, idle_timeout: "+idle))
	standbyFigures(t, e, svc, 0, 1)
	return e, m, parkedStandby(t, m, svc)
}

// brokerCall calls svc as a plain NATS client does through the broker
// (muster.call, no standby subject) and checks the echo.
func brokerCall(t *testing.T, nc *nats.Conn, svc, data string) {
	t.Helper()
	inbox, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = inbox.Unsubscribe() }()
	req := nats.NewMsg(proto.CallSubject(proto.MustService(svc)))
	req.Reply, req.Data = inbox.Subject, []byte(data)
	req.Header.Set(proto.HdrDeadline, proto.FormatDeadline(time.Now().Add(10*time.Second)))
	if err := nc.PublishMsg(req); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := inbox.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("call %q: no reply: %v", data, err)
		}
		if r.Header.Get(proto.HdrStatus) != "" {
			continue // queued, working
		}
		if string(r.Data) != data {
			t.Fatalf("call %q: reply %q (%v)", data, r.Data, proto.ErrorFromHeader(r.Header))
		}
		return
	}
}

// A standby is started at once, counts in no figure, serves the first
// call itself (no process is started for it), and a new standby is
// started behind it; the activated one exits at its idle timeout like
// any replica, the standby stays.
func TestStandbyServesFirstCall(t *testing.T) {
	const svc = "T/SB/CALL"
	e, m, id := standbySetup(t, svc, "500ms")
	startedCount(t, m, svc, 1, "the standby, before any call")
	got, err := e.Client.Call(testutil.Context(t, 10*time.Second), svc, []byte("hello"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("call: %q %v", got, err)
	}
	m.mu.Lock()
	r := m.reps[id]
	m.mu.Unlock()
	if r == nil {
		t.Fatal("the standby is gone after serving")
	}
	standbyFigures(t, e, svc, 1, 1) // it serves; a new standby is parked behind it
	if next := parkedStandby(t, m, svc); next == id {
		t.Fatal("the activated replica still counts as the standby")
	}
	if n := m.Counters()[svc].Activated; n != 0 {
		t.Fatalf("%d standbys activated by a notification: the call did not reach the standby subject", n)
	}
	startedCount(t, m, svc, 2, "the standby that served, its successor")
	standbyFigures(t, e, svc, 0, 1) // idle timeout: only the standby is left
}

// A plain NATS client's call through the broker (no standby subject): the
// broker's notification activates the parked standby (SIGUSR1), which
// pulls the queued request; no process is started for the work.
func TestStandbyActivatedByNotification(t *testing.T) {
	const svc = "T/SB/NOTIFY"
	e, m, id := standbySetup(t, svc, "10s")
	brokerCall(t, testutil.Connect(t, e.Server), svc, "queued hello")
	if n := m.Counters()[svc].Activated; n != 1 {
		t.Fatalf("%d standbys activated by notification, want 1", n)
	}
	m.mu.Lock()
	r := m.reps[id]
	m.mu.Unlock()
	if r == nil || r.standby {
		t.Fatal("the standby did not become the serving replica")
	}
	standbyFigures(t, e, svc, 1, 1)
}

// A parked standby that dies is replaced by a standby, not restarted as a
// serving replica.
func TestDeadStandbyReplacedByStandby(t *testing.T) {
	const svc = "T/SB/DEAD"
	e, m, id := standbySetup(t, svc, "10s")
	m.mu.Lock()
	p := m.reps[id].proc
	m.mu.Unlock()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if next := parkedStandby(t, m, svc); next == id {
			return errors.New("the dead standby is still the parked one")
		}
		return nil
	})
	standbyFigures(t, e, svc, 0, 1)
	startedCount(t, m, svc, 2, "the standby and its replacement")
}

// A broker notifies the host that has a parked standby of the service,
// whatever its placement scheme: of two hosts offering it, only the one
// with the standby serves plain clients' calls through the broker, by
// activating standbys; the other starts nothing.
func TestPlacementPrefersParkedStandby(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/SB/PLACE"
	a := startManager(t, e, testConfig(t, 8, svc+" worker-echo max: 2, standby: 1, exit_after_conversation: true"))
	b := startManager(t, e, testConfig(t, 8, svc+" worker-echo max: 2"))
	nc := testutil.Connect(t, e.Server)
	for i := 0; i < 3; i++ {
		standbyFigures(t, e, svc, 0, 1)
		parkedStandby(t, a, svc)
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error { // the broker sees it in a's record
			if c, ok := e.Broker.ChooseAttach(svc); !ok || c != a.ID() {
				return fmt.Errorf("broker would notify %q", c)
			}
			return nil
		})
		brokerCall(t, nc, svc, fmt.Sprintf("placed %d", i))
	}
	if n := a.Counters()[svc].Activated; n != 3 {
		t.Errorf("host with the standby activated %d standbys, want 3", n)
	}
	if n := b.Counters()[svc].Started; n != 0 {
		t.Errorf("host without a standby started %d replicas, want 0", n)
	}
}

// armOf waits until the record of replica id says arm (ArmOn, ArmOff).
func armOf(t *testing.T, m *Manager, id, want string) {
	t.Helper()
	ctx := testutil.Context(t, 20*time.Second)
	testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		e, err := m.repKV.Get(ctx, id)
		if err != nil {
			return err
		}
		ri, err := proto.DecodeReplicaInfo(e.Value())
		if err != nil {
			return err
		}
		if ri.State != proto.StateStandby || ri.Arm != want {
			return fmt.Errorf("state %q, arm %q; want standby, arm %q", ri.State, ri.Arm, want)
		}
		return nil
	})
}

// While a service has no serving replica, its parked standby is armed: a
// plain request on the warm subject reaches it (no "no responders" first)
// and activates it. The standby started behind it stays disarmed while
// that replica serves, is armed once it has exited, and disarmed again
// when a serving replica appears (here one started by hand).
func TestArmedStandbyTakesWarmCalls(t *testing.T) {
	const svc = "T/SB/ARM"
	e, m, id := standbySetup(t, svc, "2s") // the next standby registers before the activated one idles out
	armOf(t, m, id, proto.ArmOn)
	nc := testutil.Connect(t, e.Server)
	warm := proto.WarmSubject(proto.MustService(svc))
	if r, err := nc.Request(warm, []byte("direct"), 10*time.Second); err != nil || string(r.Data) != "direct" {
		t.Fatalf("warm request to the armed standby: %v", err)
	}
	if n := m.Counters()[svc].Activated; n != 0 {
		t.Fatalf("%d standbys activated by a notification, want the warm request's", n)
	}
	next := ""
	testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if next = parkedStandby(t, m, svc); next == id {
			return errors.New("the activated replica is still the parked standby")
		}
		return nil
	})
	// Its record says off while the activated one serves (the manager
	// saw that one's "ready" before it started this one).
	armOf(t, m, next, proto.ArmOff)
	m.mu.Lock()
	armed := m.reps[next].armed
	m.mu.Unlock()
	if armed {
		t.Fatal("the new standby was armed while a replica serves")
	}
	standbyFigures(t, e, svc, 0, 1) // the activated one idled out
	armOf(t, m, next, proto.ArmOn)
	// A serving replica appears: the standby is disarmed, and warm
	// requests reach only that replica.
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(append([]byte("by hand: "), m.Data...))
	}, worker.WithService(svc), worker.WithHeartbeat(200*time.Millisecond))
	armOf(t, m, next, proto.ArmOff)
	for i := 0; i < 20; i++ {
		r, err := nc.Request(warm, []byte("x"), 10*time.Second)
		if err != nil || string(r.Data) != "by hand: x" {
			t.Fatalf("warm request %d with the standby disarmed: %q %v", i, r.Data, err)
		}
	}
	if got := parkedStandby(t, m, svc); got != next {
		t.Fatalf("the parked standby changed from %s to %s", next, got)
	}
}

// A standby of a replica program that cannot be armed (its record has no
// "arm"; this one dies of SIGUSR2, as a C or shell program does) is never
// signalled: it stays parked and unarmed, and calls reach it after the
// warm subject's 503, as before.
func TestUnarmableStandbyNotSignalled(t *testing.T) {
	const svc = "T/SB/NOARM"
	e := harness.Start(t, broker.Config{})
	m := startManager(t, e, testConfig(t, 8, svc+" worker-no-arm max: 3, standby: 1, idle_timeout: 10s"))
	standbyFigures(t, e, svc, 0, 1)
	id := parkedStandby(t, m, svc)
	armOf(t, m, id, "")
	// Past the point where an armable one is armed (two heartbeats of
	// the manager's view, and the 100 ms check).
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if time.Since(m.viewFrom) < 2*m.cfg.Host.Heartbeat+200*time.Millisecond {
			return errors.New("the view is not complete yet")
		}
		return nil
	})
	m.mu.Lock()
	r := m.reps[id]
	armed := r != nil && r.armed
	m.mu.Unlock()
	if r == nil || armed {
		t.Fatalf("standby gone (%v) or marked armed (%v)", r == nil, armed)
	}
	armOf(t, m, id, "")
	nc := testutil.Connect(t, e.Server)
	if _, err := nc.Request(proto.WarmSubject(proto.MustService(svc)), []byte("x"), 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("warm request: %v, want no responders", err)
	}
	got, err := e.Client.Call(testutil.Context(t, 10*time.Second), svc, []byte("after the 503"))
	if err != nil || string(got) != "after the 503" {
		t.Fatalf("call: %q %v", got, err)
	}
	m.mu.Lock()
	alive := m.reps[id] != nil
	m.mu.Unlock()
	if !alive {
		t.Fatal("the standby that took the call is gone")
	}
}

// crashedOrStarted fails the test if svc's processes crashed, or more than
// want were started.
func crashedOrStarted(t *testing.T, m *Manager, svc string, want int64) {
	t.Helper()
	if c := m.Counters()[svc]; c.Crashed != 0 || c.Started != want {
		t.Fatalf("%d crashed (last exit %q), %d started; want 0 and %d", c.Crashed, c.LastExit, c.Started, want)
	}
}

// pastArming waits until the manager's view is complete and three of its
// heartbeats have passed since standby id registered: an armable standby
// would have been armed by then (and signalled again if it said no).
func pastArming(t *testing.T, m *Manager, id string) {
	t.Helper()
	registered := time.Now()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if !m.viewCompleteLocked(time.Now()) || time.Since(registered) < 3*m.cfg.Host.Heartbeat {
			return errors.New("not past the arming yet")
		}
		return nil
	})
}

// A standby started through a wrapper that does not exec (a shell script:
// the replica is the wrapper's child, and its record names the child's
// pid) is never signalled: SIGUSR2 and SIGUSR1 would end the wrapper and
// with it the standby, again at every start. It is reached through the
// standby subject, and a broker's notification starts a process instead
// of activating it.
func TestWrappedStandbyNotSignalled(t *testing.T) {
	const svc = "T/SB/WRAP"
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, svc+" worker-echo max: 3, standby: 1, idle_timeout: 10s")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Services[0].Program, cfg.Services[0].Args = "/bin/sh", []string{"-c", exe + " -test.run=^$; true"}
	m := startManager(t, e, cfg)
	standbyFigures(t, e, svc, 0, 1)
	id := parkedStandby(t, m, svc)
	pastArming(t, m, id)
	armOf(t, m, id, proto.ArmOff) // the Go replica could be armed: its wrapper could not
	crashedOrStarted(t, m, svc, 1)
	brokerCall(t, testutil.Connect(t, e.Server), svc, "through the broker") // notified: a new process, not SIGUSR1
	if n := m.Counters()[svc].Activated; n != 0 {
		t.Fatalf("%d standbys activated by signal", n)
	}
	crashedOrStarted(t, m, svc, 2)
	got, err := e.Client.Call(testutil.Context(t, 10*time.Second), svc, []byte("direct"))
	if err != nil || string(got) != "direct" {
		t.Fatalf("call: %q %v", got, err)
	}
	crashedOrStarted(t, m, svc, 2)
}

// A manager that starts while another replica of the service serves
// (started by hand, with a heartbeat longer than the manager's) sees it
// from the bucket at once: its standby is not armed next to it.
func TestStandbyNotArmedBesideReplicaSeenAtStart(t *testing.T) {
	const svc = "T/SB/SEED"
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(svc), worker.WithHeartbeat(10*time.Second))
	m := startManager(t, e, testConfig(t, 8, svc+" worker-echo max: 3, standby: 1, idle_timeout: 10s"))
	id := parkedStandby(t, m, svc)
	pastArming(t, m, id)
	// At once, not eventually: the replica's next record, 10 s from its
	// start, would disarm a standby armed by a view still incomplete.
	m.mu.Lock()
	armed := m.reps[id].armed
	m.mu.Unlock()
	if armed {
		t.Fatal("armed beside a serving replica")
	}
	e2, err := m.repKV.Get(testutil.Context(t, 5*time.Second), id)
	if err != nil {
		t.Fatal(err)
	}
	if ri, err := proto.DecodeReplicaInfo(e2.Value()); err != nil || ri.Arm != proto.ArmOff {
		t.Fatalf("the standby's record says arm %q (%v), want off", ri.Arm, err)
	}
}

// An armed standby stays armed across a NATS restart (its client library
// subscribes again): after the restart a plain warm request reaches it
// and activates it, and nothing was restarted.
func TestArmedStandbyAcrossNATSRestart(t *testing.T) {
	const svc = "T/SB/RESTART"
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s, testutil.Reconnecting...)
	cfg := testConfig(t, 8, svc+" worker-echo max: 2, standby: 1, idle_timeout: 10s")
	m, err := Start(testutil.Context(t, 10*time.Second), nc, cfg, Options{Conn: natsconn.Config{URL: s.ClientURL()}, Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	id := parkedStandby(t, m, svc)
	armOf(t, m, id, proto.ArmOn)
	s = testutil.RestartNATS(t, s, nil)
	caller := testutil.Connect(t, s)
	warm := proto.WarmSubject(proto.MustService(svc))
	testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		r, err := caller.Request(warm, []byte("after the restart"), 5*time.Second)
		if err != nil {
			return err // no responders until the standby has subscribed again
		}
		if string(r.Data) != "after the restart" {
			t.Fatalf("reply %q", r.Data)
		}
		return nil
	})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { // its record says it serves
		m.mu.Lock()
		defer m.mu.Unlock()
		if r := m.reps[id]; r == nil || r.standby {
			return errors.New("the standby has not become the serving replica")
		}
		return nil
	})
	if c := m.Counters()[svc]; c.Activated != 0 || c.Crashed != 0 || c.Hung != 0 {
		t.Fatalf("counters %+v: the standby did not serve the call itself, or a replica failed", c)
	}
	shutdown(t, m) // before the restarted server goes (its cleanup runs first)
	assertNoLeftovers(t, cfg)
}
