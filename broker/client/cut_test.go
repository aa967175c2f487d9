package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// TestCutConnectionIsNotBlamedOnTheReplica: a warm request that nobody
// holds any more is "replica gone" (0003/0012) only while the caller's own
// connection stayed up. If the connection dropped while the request was in
// flight, the transport may have lost it: the caller gets 0215/0148 ("may
// or may not have run"), not a false verdict on the replica.
//
// The stand-in for a request lost in transit is a subscriber in the warm
// queue group that swallows requests and answers no FIND.
func TestCutConnectionIsNotBlamedOnTheReplica(t *testing.T) {
	const svc = "T/CUT/X"
	for _, cut := range []bool{false, true} {
		t.Run(map[bool]string{false: "connection up", true: "connection cut"}[cut], func(t *testing.T) {
			s := testutil.StartNATS(t)
			sink := cutConn(t, s)
			took := make(chan struct{}, 1)
			if _, err := sink.QueueSubscribe(proto.WarmSubject(proto.MustService(svc)), "muster", func(*nats.Msg) {
				select {
				case took <- struct{}{}:
				default:
				}
			}); err != nil {
				t.Fatal(err)
			}
			if err := sink.Flush(); err != nil { // the server has the subscription
				t.Fatal(err)
			}
			c := cutClient(t, s)
			errc := make(chan error, 1)
			go func() {
				_, err := c.Call(testutil.Context(t, 20*time.Second), svc, []byte("x"))
				errc <- err
			}()
			select {
			case <-took:
			case err := <-errc:
				t.Fatalf("call ended before the sink took it: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the sink did not get the call")
			}
			if cut {
				s = testutil.RestartNATS(t, s, nil)
			}
			var err2 error
			select {
			case err2 = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatal("call still waiting 10s after its request was swallowed")
			}
			want := proto.ErrLoggedOff
			if cut {
				want = proto.ErrBrokerNotActive
			}
			var pe *proto.Error
			if !errors.As(err2, &pe) || !errors.Is(err2, want) {
				t.Fatalf("call: %v; want %v", err2, want.Code)
			}
		})
	}
}

// TestReplyLostInACut: a caller whose replica said "working" pings it; if
// the caller's connection drops, the replica's reply may have gone into
// the cut while the replica lives on and passes every PING. After a cut
// the caller asks whether the replica still holds the request instead,
// and ends with 0215/0148 rather than waiting to its deadline.
func TestReplyLostInACut(t *testing.T) {
	const svc, id = "T/CUT/Y", "fake1"
	s := testutil.StartNATS(t)
	fake := cutConn(t, s)
	took := make(chan struct{}, 1)
	if _, err := fake.QueueSubscribe(proto.WarmSubject(proto.MustService(svc)), "muster", func(m *nats.Msg) {
		st := nats.NewMsg(m.Reply)
		st.Header.Set(proto.HdrStatus, proto.StatusWorking)
		st.Header.Set(proto.HdrReplica, id)
		_ = fake.PublishMsg(st)
		select {
		case took <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := fake.Subscribe(proto.ReplicaSubject(id), func(m *nats.Msg) { // alive: every PING answered
		a := nats.NewMsg(m.Reply)
		a.Header.Set(proto.HdrReplica, id)
		_ = m.RespondMsg(a)
	}); err != nil {
		t.Fatal(err)
	}
	if err := fake.Flush(); err != nil { // the server has the subscriptions
		t.Fatal(err)
	}
	c := cutClient(t, s)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(testutil.Context(t, 30*time.Second), svc, []byte("x"))
		errc <- err
	}()
	lostInACut(t, s, took, errc, "call")
}

// TestQueuedRequestTakenInACut: a caller told "queued" that then loses its
// connection asks the broker whether the queue still holds its request
// (FIND with Muster-Seq). While it does, the caller waits on; once it is
// gone — a replica took it and its reply went into the cut — and no
// replica holds it, the caller ends with 0215/0148 instead of waiting to
// its deadline.
func TestQueuedRequestTakenInACut(t *testing.T) {
	const svc = "T/CUT/Q"
	e := harness.Start(t, broker.Config{})
	harness.RegisterAttach(t, e, "cut-attach", svc) // attachable, never starts anything
	nc := cutConn(t, e.Server)
	c := newClient(t, nc)
	js, err := jetstream.New(e.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 30*time.Second)
	// A spy sees the broker's "queued" status go to the caller's inbox: the
	// cut must come after the caller has it.
	spy, err := e.NC.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := c.Call(ctx, svc, []byte("q"))
		errc <- err
	}()
	for {
		m, err := spy.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no queued status seen: %v", err)
		}
		if m.Header.Get(proto.HdrStatus) == proto.StatusQueued && m.Header.Get(proto.HdrSeq) != "" {
			break
		}
	}
	_ = spy.Unsubscribe()
	if err := nc.Flush(); err != nil { // the caller's connection has read what came before
		t.Fatal(err)
	}
	var seq uint64
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		st, err := js.Stream(ctx, proto.QueueStream)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx)
		if err != nil || info.State.Msgs != 1 {
			return fmt.Errorf("queue: %v %v", info, err)
		}
		seq = info.State.LastSeq
		return nil
	})
	// Cut the caller's connection only: the server closes it, the client
	// reconnects (the broker and the queue stay).
	if err := e.Server.DisconnectClientByID(clientID(t, nc)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		t.Fatalf("call ended while its request waits in the queue: %v", err)
	case <-time.After(2 * time.Second): // several checks: the broker says "still queued"
	}
	st, err := js.Stream(ctx, proto.QueueStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil { // a replica took it; its reply is lost
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, proto.ErrBrokerNotActive) {
			t.Fatalf("call: %v; want 0215/0148", err)
		}
		t.Logf("ended %v after the start", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("call still waiting 10s after its request left the queue with nobody holding it")
	}
}

// clientID is the server's id of connection nc.
func clientID(t *testing.T, nc *nats.Conn) uint64 {
	t.Helper()
	id, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestBrokerLostBeforeQueued: a call sent to the brokers whose broker dies
// before it says a word (no "queued", no error) is sent again once a ping
// interval has passed, and reaches a live broker: the caller gets its
// reply, not a wait to its deadline. The dead broker is a subscriber in
// the brokers' queue group that swallows the request; the live one starts
// after it is gone.
func TestBrokerLostBeforeQueued(t *testing.T) {
	s := testutil.StartNATS(t)
	sink := testutil.Connect(t, s)
	took := make(chan struct{}, 1)
	sub, err := sink.QueueSubscribe(proto.CallSubject(proto.MustService(demo.EchoService)), proto.BrokerQueue, func(m *nats.Msg) {
		if m.Header.Get(proto.HdrOnce) != "1" {
			t.Errorf("request to the brokers without %s: 1", proto.HdrOnce)
		}
		select {
		case took <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(testutil.Connect(t, s), client.WithPingInterval(100*time.Millisecond)) // first repeat after 1 s
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	type result struct {
		reply []byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.Call(testutil.Context(t, 30*time.Second), demo.EchoService, []byte("once"))
		done <- result{r, err}
	}()
	select {
	case <-took:
	case r := <-done:
		t.Fatalf("call ended before the broker took it: %q %v", r.reply, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the swallowing broker did not get the call")
	}
	if err := sub.Unsubscribe(); err != nil { // the broker is gone
		t.Fatal(err)
	}
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, testutil.Connect(t, s), broker.Config{Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	e := &harness.Env{T: t, Server: s, NC: testutil.Connect(t, s), Broker: b}
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService))
	select {
	case r := <-done:
		if r.err != nil || string(r.reply) != "once" {
			t.Fatalf("call: %q %v; want the echo", r.reply, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("call still waiting 15s after its broker died with the request")
	}
}

// TestBareNewLostInACut: a bare NEW (PROTOCOL §6.4, "Bare NEW") is found
// like a bare call: if the client's connection drops while it waits, the
// NEW may have gone into the cut, and no replica holds it; Open ends with
// 0215/0148 rather than waiting to its deadline. The stand-in replica
// answers the first NEW (with headers) bare, so the client's next NEW goes
// bare, and swallows that one.
func TestBareNewLostInACut(t *testing.T) {
	const svc, id = "T/CUT/NEW", "fake2"
	s := testutil.StartNATS(t)
	fake := cutConn(t, s)
	if _, err := fake.QueueSubscribe(proto.WarmSubject(proto.MustService(svc)), "muster", func(m *nats.Msg) {
		_ = fake.PublishRequest(m.Reply, proto.ConvReplySubject(id, "c1"), m.Data) // a bare reply to the NEW
	}); err != nil {
		t.Fatal(err)
	}
	took := make(chan struct{}, 1)
	if _, err := fake.QueueSubscribe(proto.NewSubject(proto.MustService(svc)), "muster", func(m *nats.Msg) {
		if len(m.Header) == 0 {
			select {
			case took <- struct{}{}:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := fake.Flush(); err != nil { // the server has the subscriptions
		t.Fatal(err)
	}
	c := cutClient(t, s)
	if _, got, err := c.Open(testutil.Context(t, 10*time.Second), svc, []byte("first")); err != nil || string(got) != "first" {
		t.Fatalf("first Open: %q %v", got, err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Open(testutil.Context(t, 30*time.Second), svc, []byte("second"))
		errc <- err
	}()
	lostInACut(t, s, took, errc, "Open (its second NEW, bare)")
}

// cutConn connects to s and reconnects at once after a cut or a restart.
func cutConn(t *testing.T, s *server.Server) *nats.Conn {
	return testutil.Connect(t, s, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
}

// cutClient is a client on its own cutConn, closed at the test's end.
func cutClient(t *testing.T, s *server.Server) *client.Client {
	return newClient(t, cutConn(t, s))
}

// lostInACut waits until the stand-in replica has taken what (it
// signals took; its outcome comes on errc), restarts NATS (s), and wants
// what to end with 0215/0148 soon after: nobody holds it any more, and
// its answer may have gone into the cut.
func lostInACut(t *testing.T, s *server.Server, took <-chan struct{}, errc <-chan error, what string) {
	t.Helper()
	select {
	case <-took:
	case err := <-errc:
		t.Fatalf("%s ended before the stand-in replica took it: %v", what, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("the stand-in replica did not get the %s", what)
	}
	testutil.RestartNATS(t, s, nil)
	select {
	case err := <-errc:
		if !errors.Is(err, proto.ErrBrokerNotActive) {
			t.Fatalf("%s: %v; want 0215/0148", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still waiting 10s after the cut, though nobody holds it", what)
	}
}
