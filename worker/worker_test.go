package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/goleak"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// TestMain doubles as a replica process: with MUSTER_TEST_HELPER set, the
// test binary serves a demo handler instead of running tests.
func TestMain(m *testing.M) {
	switch os.Getenv("MUSTER_TEST_HELPER") {
	case "":
		// Every goroutine a test starts (replicas, servers, brokers,
		// clients) must be gone when the tests are.
		goleak.VerifyTestMain(m)
	case "echo":
		worker.Main(worker.HandlerFunc(hangingEcho))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv("MUSTER_TEST_HELPER"))
		os.Exit(3)
	}
}

// hangingEcho is demo.Echo, except that the message "hang" never gets a reply.
func hangingEcho(ctx context.Context, c *worker.Conv) error {
	for {
		m, err := c.Receive(ctx)
		if err != nil {
			return nil
		}
		if string(m.Data) == "hang" {
			<-ctx.Done()
			return ctx.Err()
		}
		if err := c.Reply([]byte(fmt.Sprintf("#%d %s", m.Seq, m.Data))); err != nil {
			return err
		}
	}
}

func control(t *testing.T, nc *nats.Conn, id, op string) {
	t.Helper()
	m := nats.NewMsg(proto.ControlSubject(id))
	m.Header.Set(proto.HdrOp, op)
	r, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		t.Fatal(e)
	}
}

func replicaRecord(t *testing.T, nc *nats.Conn, id string) (proto.ReplicaInfo, bool) {
	t.Helper()
	js, _ := jetstream.New(nc)
	ctx := testutil.Context(t, 5*time.Second)
	kv, err := js.KeyValue(ctx, proto.ReplicaBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return proto.ReplicaInfo{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	ri, err := proto.DecodeReplicaInfo(e.Value())
	if err != nil {
		t.Fatal(err)
	}
	return ri, true
}

func TestQuiesceFinishesOpenConversations(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	r := e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithReplicaID("q1"), worker.WithCapacity(2))
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, demo.EchoService, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	control(t, e.NC, "q1", proto.OpQuiesce)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if ri, _ := replicaRecord(t, e.NC, "q1"); ri.State != proto.StateQuiescing {
			return fmt.Errorf("state %q", ri.State)
		}
		return nil
	})
	// No new work reaches a quiescing replica: with no attach manager to
	// start another, a new call is refused at once (0007/0007).
	if _, err := e.Client.Call(ctx, demo.EchoService, []byte("new")); !errors.Is(err, proto.ErrNotRegistered) {
		t.Fatalf("call to a quiescing replica: %v, want 0007/0007", err)
	}
	// The open conversation goes on.
	if got, err := cv.Send(ctx, []byte("b")); err != nil || string(got) != "#2 b" {
		t.Fatalf("send during quiesce: %q %v", got, err)
	}
	if r.Exited() {
		t.Fatal("replica exited with a conversation open")
	}
	if err := cv.End(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok := replicaRecord(t, e.NC, "q1"); ok {
		t.Fatal("registration left behind after exit")
	}
}

func TestImmediateDeregisterEndsConversations(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	r := e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithReplicaID("i1"))
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, demo.EchoService, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	control(t, e.NC, "i1", proto.OpImmed)
	if err := r.Wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := cv.Send(ctx, []byte("b")); !errors.Is(err, proto.ErrDeregistered) {
		t.Fatalf("send after IMMED: %v, want 0003/0010", err)
	}
}

func TestGraceExpiryEndsConversations(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	r := e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithGrace(100*time.Millisecond))
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, demo.EchoService, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	r.Cancel() // as SIGTERM does: quiesce, grace, then IMMED
	if err := r.Wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if !errors.Is(cv.Ended(), proto.ErrDeregistered) {
			return fmt.Errorf("Ended() = %v, want 0003/0010 event", cv.Ended())
		}
		return nil
	})
}

func TestConversationTimeout(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	handlerErr := make(chan error, 1)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				handlerErr <- err
				return nil
			}
			_ = c.Reply(m.Data)
		}
	}, worker.WithService("T/CONV/TIMEOUT"), worker.WithConvTimeout(200*time.Millisecond))
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, "T/CONV/TIMEOUT", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-handlerErr:
		if !errors.Is(err, proto.ErrConvTimeout) {
			t.Fatalf("replica side: %v, want 0003/0073", err)
		}
	case <-ctx.Done():
		t.Fatal("conversation never timed out")
	}
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if !errors.Is(cv.Ended(), proto.ErrConvTimeout) {
			return fmt.Errorf("client side Ended() = %v", cv.Ended())
		}
		return nil
	})
	if _, err := cv.Send(ctx, []byte("late")); !errors.Is(err, proto.ErrConvTimeout) {
		t.Fatalf("send after timeout: %v", err)
	}
}

func TestIdleTimeoutExits(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	r := e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithReplicaID("idle1"), worker.WithIdleTimeout(300*time.Millisecond))
	if _, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("x")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.Wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("exited %v after the last call, before its idle timeout", d)
	}
	if _, ok := replicaRecord(t, e.NC, "idle1"); ok {
		t.Fatal("registration left behind")
	}
}

func TestMinReplicasStayAlive(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	old := e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithIdleTimeout(200*time.Millisecond), worker.WithMinReplicas(1), worker.WithReplicaID("old"))
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, ok := replicaRecord(t, e.NC, "old"); !ok {
			return errors.New("old not registered")
		}
		return nil
	})
	young := e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithIdleTimeout(200*time.Millisecond), worker.WithMinReplicas(1), worker.WithReplicaID("young"))
	if err := young.Wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Done:
		t.Fatal("the oldest replica exited although min is 1")
	case <-time.After(time.Second): // five idle timeouts
	}
}

func TestExitAfterConversation(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	r := e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithExitAfterConversation(true))
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, demo.EchoService, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Exited() {
		t.Fatal("exited during the conversation")
	}
	if err := cv.End(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestRegistrationAndDiscovery(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithReplicaID("d1"), worker.WithCapacity(3))
	ri, ok := replicaRecord(t, e.NC, "d1")
	if !ok || ri.Service != demo.EchoService || ri.Capacity != 3 || ri.State != proto.StateReady || ri.PID != os.Getpid() {
		t.Fatalf("registration %+v", ri)
	}
	for i := 0; i < 3; i++ {
		if _, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("abc")); err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.NC.Request("$SRV.PING.DEMO_ECHO_ECHO", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(r.Data, &ping); err != nil || ping.ID != "d1" || ping.Type != micro.PingResponseType || ping.Metadata["muster.service"] != demo.EchoService {
		t.Fatalf("ping %+v %v", ping, err)
	}
	r, err = e.NC.Request("$SRV.STATS.DEMO_ECHO_ECHO.d1", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st micro.Stats
	if err := json.Unmarshal(r.Data, &st); err != nil || len(st.Endpoints) != 1 || st.Endpoints[0].NumRequests != 3 {
		t.Fatalf("stats %s %v", r.Data, err)
	}
	r, err = e.NC.Request("$SRV.INFO", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(r.Data, &info); err != nil || info.Endpoints[0].Subject != proto.WarmSubject(proto.MustService(demo.EchoService)) {
		t.Fatalf("info %s %v", r.Data, err)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		opts []worker.Option
	}{
		{"no service", nil},
		{"bad service", []worker.Option{worker.WithService("A/B")}},
		{"zero capacity", []worker.Option{worker.WithService(demo.EchoService), worker.WithCapacity(0)}},
		{"bad replica id", []worker.Option{worker.WithService(demo.EchoService), worker.WithReplicaID("a.b")}},
		{"negative idle", []worker.Option{worker.WithService(demo.EchoService), worker.WithIdleTimeout(-time.Second)}},
		{"no url", []worker.Option{worker.WithService(demo.EchoService)}},
	}
	t.Setenv("MUSTER_URL", "")
	t.Setenv("MUSTER_SERVICE", "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := worker.Run(context.Background(), worker.HandlerFunc(demo.Echo), tc.opts...)
			checkConfigError(t, err, "")
		})
	}
	for _, v := range []string{"many", "0", "-1"} {
		t.Run("env capacity "+v, func(t *testing.T) {
			t.Setenv("MUSTER_CAPACITY", v)
			err := worker.Run(context.Background(), worker.HandlerFunc(demo.Echo), worker.WithService(demo.EchoService))
			checkConfigError(t, err, "MUSTER_CAPACITY")
		})
	}
}

// checkConfigError checks that err is a configuration error that says so
// once (no "bad configuration: bad configuration") and names what.
func checkConfigError(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, worker.ErrConfig) {
		t.Fatalf("err %v, want ErrConfig", err)
	}
	if n := strings.Count(err.Error(), worker.ErrConfig.Error()); n != 1 {
		t.Errorf("%q says %q %d times", err, worker.ErrConfig, n)
	}
	if !strings.Contains(err.Error(), what) {
		t.Errorf("%q does not name %s", err, what)
	}
}

// helperProc is a replica process; done closes when it has exited.
type helperProc struct {
	*exec.Cmd
	done chan struct{}
}

// startHelper runs this test binary as a replica process.
func startHelper(t *testing.T, e *harness.Env, svc, id string, extra ...string) helperProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MUSTER_TEST_HELPER=echo", "MUSTER_URL="+e.Server.ClientURL(),
		"MUSTER_SERVICE="+svc, "MUSTER_REPLICA_ID="+id, "MUSTER_HEARTBEAT=500ms")
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, ok := replicaRecord(t, e.NC, id); !ok {
			return fmt.Errorf("helper replica %s not registered", id)
		}
		return nil
	})
	return helperProc{cmd, done}
}

func TestReplicaKilledMidConversation(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cmd := startHelper(t, e, "T/KILL/X", "k1")
	ctx := testutil.Context(t, 20*time.Second)
	cv, first, err := e.Client.Open(ctx, "T/KILL/X", []byte("a"))
	if err != nil || string(first) != "#1 a" {
		t.Fatalf("open: %q %v", first, err)
	}
	errc := make(chan error, 1)
	go func() { _, err := cv.Send(ctx, []byte("hang")); errc <- err }()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		var ri proto.ReplicaInfo
		ri, _ = replicaRecord(t, e.NC, "k1")
		if ri.Stats.Messages < 2 {
			return errors.New("hang not received yet")
		}
		return nil
	})
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, proto.ErrLoggedOff) {
			t.Fatalf("client got %v, want 0003/0012", err)
		}
		if d := time.Since(killed); d > 2*time.Second {
			t.Fatalf("client learned of the death after %v, want < 2s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client still waiting 5s after its replica died")
	}
	// A new message on the dead conversation fails at once, too.
	if _, err := cv.Send(ctx, []byte("again")); !errors.Is(err, proto.ErrLoggedOff) {
		t.Fatalf("send after death: %v", err)
	}
}

func TestSIGTERMQuiescesHelperProcess(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cmd := startHelper(t, e, "T/TERM/X", "t1", "MUSTER_GRACE=10s")
	ctx := testutil.Context(t, 20*time.Second)
	cv, _, err := e.Client.Open(ctx, "T/TERM/X", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if ri, _ := replicaRecord(t, e.NC, "t1"); ri.State != proto.StateQuiescing {
			return fmt.Errorf("state %q", ri.State)
		}
		return nil
	})
	if got, err := cv.Send(ctx, []byte("b")); err != nil || string(got) != "#2 b" {
		t.Fatalf("send while quiescing: %q %v", got, err)
	}
	if err := cv.End(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-cmd.done:
		default:
			return errors.New("helper still running")
		}
		if !cmd.ProcessState.Success() {
			return fmt.Errorf("helper exit %v", cmd.ProcessState)
		}
		return nil
	})
}

// An option overrides its environment variable so fully that a bad value
// there does not matter.
func TestOptionOverridesBadEnvironment(t *testing.T) {
	t.Setenv("MUSTER_CAPACITY", "lots")
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithCapacity(2), worker.WithReplicaID("env1"))
	if ri, ok := replicaRecord(t, e.NC, "env1"); !ok || ri.Capacity != 2 {
		t.Fatalf("registration %+v", ri)
	}
}

// A replica whose output pipe breaks (its attach manager died) goes on
// serving, and still stops cleanly when told to.
func TestReplicaSurvivesBrokenOutputPipe(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MUSTER_TEST_HELPER=echo", "MUSTER_URL="+e.Server.ClientURL(),
		"MUSTER_SERVICE=T/PIPE/X", "MUSTER_REPLICA_ID=p1", "GORACE=atexit_sleep_ms=0")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, ok := replicaRecord(t, e.NC, "p1"); !ok {
			return errors.New("not registered")
		}
		return nil
	})
	r.Close() // the reader is gone, as when the manager dies
	if got, err := e.Client.Call(testutil.Context(t, 5*time.Second), "T/PIPE/X", []byte("still here")); err != nil || string(got) != "#1 still here" {
		t.Fatalf("call after the pipe broke: %q %v", got, err)
	}
	control(t, e.NC, "p1", proto.OpImmed) // logs as it stops: must not die of SIGPIPE
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("replica ended with %v, want a clean exit", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("replica did not stop")
	}
}

// The registration follows conversations within a fraction of a second,
// not only at heartbeats, so listings and the broker's figures are fresh.
func TestRegistrationFollowsConversations(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithReplicaID("fresh1"), worker.WithHeartbeat(10*time.Second))
	if _, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("x")); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if ri, _ := replicaRecord(t, e.NC, "fresh1"); ri.Stats.Conversations != 1 || ri.Stats.Messages != 1 {
			return fmt.Errorf("registration stats %+v", ri.Stats)
		}
		return nil
	})
}
