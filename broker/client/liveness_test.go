package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// These tests are about "no silent waits": a caller learns that its
// replica died, a replica learns that its conversation's client died, and
// a caller that gives up cancels its work at the replica.

// ownReplica runs a replica on a connection of its own, which the test can
// close to make the replica vanish from NATS as a killed process does (its
// subscriptions go with its TCP connection). It is stopped at test end.
func ownReplica(t *testing.T, e *harness.Env, h worker.HandlerFunc, opts ...worker.Option) *nats.Conn {
	t.Helper()
	nc := testutil.Connect(t, e.Server)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	all := append([]worker.Option{worker.WithConn(nc), worker.WithSignals(false), worker.WithLogger(harness.Quiet),
		worker.WithGrace(time.Second), worker.WithReadyFunc(func() { close(ready) })}, opts...)
	go func() { done <- worker.Run(ctx, h, all...) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("replica did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("replica not ready within 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("replica did not stop within 15s")
		}
	})
	return nc
}

// blockUntilDone is a handler that reports each request it takes on took
// and then waits for its context.
func blockUntilDone(took chan<- string) worker.HandlerFunc {
	return func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		took <- string(m.Data)
		<-ctx.Done()
		return ctx.Err()
	}
}

// A warm call whose replica dies before its "working" status (200–300 ms)
// ends with 0003/0012 within about a second, whether or not other replicas
// of the service live: the client asks the service's replicas who holds
// its request (FIND) and nobody answers.
func TestWarmCallReplicaDiesBeforeWorking(t *testing.T) {
	for _, others := range []bool{false, true} {
		t.Run(fmt.Sprintf("other replicas alive=%v", others), func(t *testing.T) {
			e := harness.Start(t, broker.Config{})
			const svc = "T/DIE/EARLY"
			took := make(chan string, 4)
			if others {
				// A full replica of the service: it hears every FIND but
				// holds nothing of the call.
				ownReplica(t, e, blockUntilDone(took), worker.WithService(svc))
				ctx, cancel := context.WithCancel(context.Background())
				opened := make(chan struct{})
				go func() { // the handler never answers: Open returns at the end of the test
					defer close(opened)
					_, _, _ = e.Client.Open(ctx, svc, []byte("occupy"))
				}()
				t.Cleanup(func() { cancel(); <-opened })
				if got := <-took; got != "occupy" {
					t.Fatalf("took %q", got)
				}
			}
			victim := ownReplica(t, e, blockUntilDone(took), worker.WithService(svc))
			errc := make(chan error, 1)
			go func() {
				_, err := e.Client.Call(testutil.Context(t, 20*time.Second), svc, []byte("call"))
				errc <- err
			}()
			if got := <-took; got != "call" {
				t.Fatalf("took %q", got)
			}
			// 50 ms into the call: well before its "working" status.
			time.Sleep(50 * time.Millisecond)
			killed := time.Now()
			victim.Close()
			select {
			case err := <-errc:
				d := time.Since(killed)
				t.Logf("error %v after %v", err, d)
				if !errors.Is(err, proto.ErrLoggedOff) {
					t.Fatalf("err %v, want 0003/0012", err)
				}
				if d > 1500*time.Millisecond {
					t.Fatalf("error %v after the replica died, want ≤ 1.5s", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("caller still waiting 10s after its replica died")
			}
		})
	}
}

// A replica that is merely slow is never declared dead: its "working"
// status names it, and it answers its PINGs.
func TestSlowReplicaIsNotDeclaredDead(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		return c.Reply(m.Data)
	}, worker.WithService("T/SLOW/X"))
	got, err := e.Client.Call(testutil.Context(t, 10*time.Second), "T/SLOW/X", []byte("late"))
	if err != nil || string(got) != "late" {
		t.Fatalf("slow call: %q %v", got, err)
	}
}

// A warm request that waits in the replica for a worker (the handler of
// the previous call goes on after its reply) is not taken yet, so nobody
// holds it; FIND gets "queued" from that replica, and the call is not
// declared dead.
func TestRequestWaitingForAWorkerIsNotDeclaredDead(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	lingered := make(chan struct{}, 2)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if err := c.Reply(m.Data); err != nil {
			return err
		}
		if string(m.Data) == "linger" {
			lingered <- struct{}{}
			time.Sleep(2 * time.Second) // keeps the only worker after the slot is free
		}
		return nil
	}, worker.WithService("T/LINGER/X"))
	ctx := testutil.Context(t, 10*time.Second)
	// The first lingers in the warm dispatcher (it serves calls inline),
	// the second, taken over by its stall timer, in the only worker.
	for i := 0; i < 2; i++ {
		if _, err := e.Client.Call(ctx, "T/LINGER/X", []byte("linger")); err != nil {
			t.Fatal(err)
		}
		<-lingered
	}
	start := time.Now()
	got, err := e.Client.Call(ctx, "T/LINGER/X", []byte("next"))
	if err != nil || string(got) != "next" {
		t.Fatalf("call waiting for a worker: %q %v", got, err)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("answered after %v: the call did not wait for the worker, the test proves nothing", d)
	}
}

// A caller that gives up (its context cancelled, not its deadline)
// cancels the call at the replica: the handler's context ends.
func TestCancelledCallIsCancelledAtReplica(t *testing.T) {
	for _, when := range []string{"before working", "after working"} {
		t.Run(when, func(t *testing.T) {
			e := harness.Start(t, broker.Config{})
			took := make(chan string, 1)
			ended := make(chan error, 1)
			e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
				m, err := c.Receive(ctx)
				if err != nil {
					return err
				}
				took <- string(m.Data)
				<-ctx.Done()
				ended <- ctx.Err()
				return ctx.Err()
			}, worker.WithService("T/CANCEL/CALL"))
			ctx, cancel := context.WithCancel(testutil.Context(t, 20*time.Second))
			errc := make(chan error, 1)
			go func() { _, err := e.Client.Call(ctx, "T/CANCEL/CALL", []byte("x")); errc <- err }()
			<-took
			if when == "after working" {
				time.Sleep(400 * time.Millisecond) // the status goes out 200–300 ms after the replica took it
			}
			cancelled := time.Now()
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("caller got %v, want its cancellation", err)
			}
			select {
			case err := <-ended:
				t.Logf("handler's context ended (%v) %v after the cancel", err, time.Since(cancelled))
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("handler's context: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("handler's context still live 5s after the caller cancelled")
			}
			// The replica is free again.
			testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				if st := brokerStats(t, e, "T/CANCEL/CALL"); st.Active != 0 || st.Replicas != 1 {
					return fmt.Errorf("stats %+v", st)
				}
				return nil
			})
		})
	}
}

// A conversation whose client died (its connection gone) frees its
// replica within 2s: the client asked for keepalives at NEW, and the
// replica ends the conversation (0003/0012) after 3 missed ones.
func TestDeadClientFreesConversation(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	ended := make(chan error, 1)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				ended <- err
				return nil
			}
			if err := c.Reply(m.Data); err != nil {
				return err
			}
		}
	}, worker.WithService("T/DEAD/CLIENT"), worker.WithReplicaID("dc1"))
	nc := testutil.Connect(t, e.Server)
	cl, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := cl.Open(ctx, "T/DEAD/CLIENT", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cv.Send(ctx, []byte("b")); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	nc.Close() // the client's process dies: its connection is gone, nothing more is sent
	select {
	case err := <-ended:
		d := time.Since(died)
		t.Logf("handler saw %v %v after the client died", err, d)
		if !errors.Is(err, proto.ErrLoggedOff) {
			t.Fatalf("handler saw %v, want 0003/0012", err)
		}
		if d > 2*time.Second {
			t.Fatalf("conversation ended %v after its client died, want ≤ 2s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("conversation still open 10s after its client died")
	}
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if st := brokerStats(t, e, "T/DEAD/CLIENT"); st.Active != 0 {
			return fmt.Errorf("replica still busy: %+v", st)
		}
		return nil
	})
}

// Keepalives are opt-in: a conversation opened without Muster-Keepalive
// (a plain NATS client) stays open while one that asked for them and went
// silent ends; and an idle Go client keeps its conversation.
func TestKeepaliveIsOptIn(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(echoConv, worker.WithService("T/KEEP/X"), worker.WithCapacity(4), worker.WithReplicaID("ka1"))
	events, err := e.NC.SubscribeSync("events.>")
	if err != nil {
		t.Fatal(err)
	}
	open := func(keepalive string) string {
		m := nats.NewMsg(proto.WarmSubject(proto.MustService("T/KEEP/X")))
		m.Header.Set(proto.HdrOp, proto.OpNew)
		m.Header.Set(proto.HdrNotify, "events."+keepalive)
		if keepalive != "" {
			m.Header.Set(proto.HdrKeepalive, keepalive)
		}
		r, err := e.NC.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if e := proto.ErrorFromHeader(r.Header); e != nil {
			t.Fatal(e)
		}
		return r.Header.Get(proto.HdrConv)
	}
	ping := func(conv string) error {
		m := nats.NewMsg(proto.ReplicaSubject("ka1"))
		m.Header.Set(proto.HdrOp, proto.OpPing)
		m.Header.Set(proto.HdrConv, conv)
		r, err := e.NC.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if e := proto.ErrorFromHeader(r.Header); e != nil {
			return e
		}
		return nil
	}
	ctx := testutil.Context(t, 10*time.Second)
	goConv, _, err := e.Client.Open(ctx, "T/KEEP/X", []byte("go"))
	if err != nil {
		t.Fatal(err)
	}
	plain := open("")
	opened := time.Now() // before the NEW: the replica's silence clock starts when it accepts it
	silent := open("500ms")
	ev, err := events.NextMsg(5 * time.Second) // the first conversation to end
	if err != nil {
		t.Fatalf("silent conversation still open: %v", err)
	}
	if ev.Subject != "events.500ms" || ev.Header.Get(proto.HdrConv) != silent || !errors.Is(proto.ErrorFromHeader(ev.Header), proto.ErrLoggedOff) {
		t.Fatalf("event on %s: %+v, want conversation %s ended with 0003/0012", ev.Subject, ev.Header, silent)
	}
	if d := time.Since(opened); d < 1500*time.Millisecond {
		t.Fatalf("silent conversation ended after %v, before its 3 keepalives of 500ms", d)
	}
	if err := ping(plain); err != nil {
		t.Fatalf("conversation without keepalive: %v, want still open", err)
	}
	if got, err := goConv.Send(ctx, []byte("still here")); err != nil || string(got) != "still here" {
		t.Fatalf("idle Go client's conversation: %q %v", got, err)
	}
}

// FIND and CANCEL on the held subject, as a plain NATS client uses them.
func TestHeldSubjectPlain(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	took := make(chan string, 1)
	ended := make(chan error, 1)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		took <- string(m.Data)
		<-ctx.Done()
		ended <- ctx.Err()
		return nil
	}, worker.WithService("T/HELD/X"), worker.WithReplicaID("h1"))
	svc := proto.MustService("T/HELD/X")
	inbox := nats.NewInbox()
	sub, err := e.NC.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.NC.PublishRequest(proto.WarmSubject(svc), inbox, []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-took
	held := func(op, reply string) (*nats.Msg, error) {
		m := nats.NewMsg(proto.HeldSubject(svc))
		if op != "" {
			m.Header.Set(proto.HdrOp, op)
		}
		if reply != "" {
			m.Header.Set(proto.HdrReply, reply)
		}
		return e.NC.RequestMsg(m, 500*time.Millisecond)
	}
	r, err := held("", inbox) // FIND is the default
	if err != nil || r.Header.Get(proto.HdrStatus) != proto.StatusWorking || r.Header.Get(proto.HdrReplica) != "h1" {
		t.Fatalf("FIND: %v %+v", err, r)
	}
	if _, err := held(proto.OpFind, "_INBOX.nobody"); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("FIND of a request nobody holds: %v, want silence", err)
	}
	if r, err := held("OLD", inbox); err != nil || proto.ErrorFromHeader(r.Header) == nil || proto.ErrorFromHeader(r.Header).Code != proto.CodeBadRequest {
		t.Fatalf("OLD on the held subject: %v %+v", err, r)
	}
	if r, err := held(proto.OpFind, ""); err != nil || proto.ErrorFromHeader(r.Header) == nil {
		t.Fatalf("FIND without Muster-Reply: %v %+v", err, r)
	}
	r, err = held(proto.OpCancel, inbox)
	if err != nil || r.Header.Get(proto.HdrReplica) != "h1" || proto.ErrorFromHeader(r.Header) != nil {
		t.Fatalf("CANCEL: %v %+v", err, r)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's context: %v", err)
	}
	// The cancelled call's caller gets nothing: it gave up.
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("cancelled caller got %+v", m.Header)
	}
}
