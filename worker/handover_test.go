package worker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// runReplica runs worker.Run in a goroutine until ctx ends and waits until
// it is ready; done receives Run's result. No broker is involved.
func runReplica(t *testing.T, ctx context.Context, h worker.HandlerFunc, opts ...worker.Option) chan error {
	t.Helper()
	ready := make(chan struct{})
	done := make(chan error, 1)
	all := append([]worker.Option{worker.WithSignals(false), worker.WithLogger(harness.Quiet),
		worker.WithReadyFunc(func() { close(ready) })}, opts...)
	go func() { done <- worker.Run(ctx, h, all...) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("replica did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("replica not ready within 10s")
	}
	return done
}

func waitRun(t *testing.T, done chan error, d time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(d):
		t.Fatalf("Run did not return within %v", d)
	}
}

// A queued request whose slot is free while every worker is still busy
// (a handler goes on after its final reply) waits for a worker. If the
// replica is stopped meanwhile, the hand-over gives up: its caller gets
// 0003/0010, and nothing of the replica stays blocked on the connection.
func TestImmedWhileQueuedRequestWaitsForWorker(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	rnc := testutil.Connect(t, s)
	_, _ = rnc.Request("muster.test.nobody", nil, time.Second) // the connection's own request mux
	subs := rnc.NumSubscriptions()
	const svc = "T/HANDOVER/PULL"
	unblock := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(unblock) }) })
	done := runReplica(t, context.Background(), func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return nil
		}
		if err := c.Reply(m.Data); err != nil { // frees the slot
			return err
		}
		if string(m.Data) == "stick" {
			<-unblock // the only worker stays busy after its reply
		}
		return nil
	}, worker.WithConn(rnc), worker.WithService(svc), worker.WithReplicaID("h1"), worker.WithCapacity(1))

	// The first call sticks in the warm dispatcher (it serves calls
	// inline), the second, taken over by the stall timer, in the only
	// worker.
	for i := 0; i < 2; i++ {
		if _, err := nc.Request(proto.WarmSubject(proto.MustService(svc)), []byte("stick"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testutil.Context(t, 20*time.Second)
	js, _ := jetstream.New(nc)
	caller, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	q := nats.NewMsg(proto.QueueSubject(proto.MustService(svc)))
	q.Header.Set(proto.HdrReply, caller.Subject)
	q.Data = []byte("queued")
	if _, err := js.PublishMsg(ctx, q); err != nil {
		t.Fatal(err)
	}
	stream, _ := js.Stream(ctx, proto.QueueStream)
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return context.DeadlineExceeded // not pulled and acked yet
		}
		return nil
	})
	control(t, nc, "h1", proto.OpImmed)
	r, err := caller.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("queued caller got no answer: %v", err)
	}
	if e := proto.ErrorFromHeader(r.Header); e == nil || e.Code != proto.CodeDeregistered {
		t.Fatalf("queued caller got %v, want 0003/0010", e)
	}
	waitRun(t, done, 20*time.Second)
	if n := rnc.NumSubscriptions(); n != subs {
		t.Fatalf("%d subscriptions left on the connection after Run returned, want %d", n, subs)
	}
}

// Run does not return (nor close its connection) while requests it
// forwarded to the broker wait for the broker's acknowledgement.
func TestRunWaitsForItsForwards(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	const svc = "T/HANDOVER/FWD"
	var (
		mu              sync.Mutex
		received, acked int
	)
	forwarded := make(chan struct{}, 100)
	// A slow broker: it acknowledges each hand-over 2s after it came.
	if _, err := nc.Subscribe(proto.ForwardSubject(proto.MustService(svc)), func(m *nats.Msg) {
		mu.Lock()
		received++
		mu.Unlock()
		forwarded <- struct{}{}
		time.AfterFunc(2*time.Second, func() {
			mu.Lock()
			acked++
			mu.Unlock()
			_ = m.Respond(nil)
		})
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runReplica(t, ctx, func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if string(m.Data) == "block" {
			<-ctx.Done()
			return ctx.Err()
		}
		return c.Reply(m.Data)
	}, worker.WithURL(s.ClientURL()), worker.WithService(svc), worker.WithCapacity(1), worker.WithGrace(0))

	// One write: the server routes them all to the replica before it sees
	// the unsubscribe the first one causes, so the rest are forwarded.
	warm := proto.WarmSubject(proto.MustService(svc))
	if err := nc.PublishRequest(warm, nats.NewInbox(), []byte("block")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		// With a header: a bare request is bounced (503), not forwarded.
		m := &nats.Msg{Subject: warm, Reply: nats.NewInbox(), Data: []byte("x"), Header: nats.Header{proto.HdrProgress: {"1"}}}
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-forwarded:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing was forwarded")
	}
	cancel()
	waitRun(t, done, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if acked < received {
		t.Fatalf("Run returned with %d of %d forwards still waiting for the broker", received-acked, received)
	}
}

// TestFullReplicaBouncesBareRequests: a bare warm request (no headers, as
// the Go client sends its calls) that reaches a full replica gets a
// no-responders status, which nats.go reports as ErrNoResponders, and is
// not forwarded to the broker; a request with headers is forwarded.
func TestFullReplicaBouncesBareRequests(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	svc := "T/BOUNCE/X"
	var fwd atomic.Int64
	if _, err := nc.Subscribe(proto.ForwardSubject(proto.MustService(svc)), func(m *nats.Msg) {
		fwd.Add(1)
		_ = m.Respond(nil)
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	done := runReplica(t, ctx, func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if string(m.Data) == "block" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return c.Reply(m.Data)
	}, worker.WithURL(s.ClientURL()), worker.WithService(svc), worker.WithCapacity(1), worker.WithGrace(0))
	warm := proto.WarmSubject(proto.MustService(svc))
	// Publish the blocking request and the bare one in one write, so the
	// bare one reaches the replica before the server sees its unsubscribe.
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 4)
	if _, err := nc.ChanSubscribe(inbox+".*", replies); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(warm, inbox+".block", []byte("block")); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(warm, inbox+".bare", []byte("bare")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-replies:
		if r.Subject != inbox+".bare" || r.Header.Get("Status") != "503" || len(r.Data) != 0 {
			t.Fatalf("bare request to a full replica: got %q on %s (headers %v), want an empty 503 status", r.Data, r.Subject, r.Header)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the bare request got no answer")
	}
	// What a nats.go requester sees from a full replica: no responders.
	// (The replica left the queue group, so the server may say so itself;
	// either way a bare request never reaches the broker.)
	if _, err := nc.Request(warm, []byte("bare2"), 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("bare request to a full replica: %v, want no responders", err)
	}
	if n := fwd.Load(); n != 0 {
		t.Fatalf("%d bare requests forwarded to the broker, want 0", n)
	}
	close(release)
	if r := <-replies; r.Subject != inbox+".block" || string(r.Data) != "block" {
		t.Fatalf("blocked call: %q on %s", r.Data, r.Subject)
	}
	cancel()
	waitRun(t, done, 20*time.Second)
}
