package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

// The server's wording of "the consumer of your pull request was deleted"
// is what consumerDeleted recognises; other statuses are not taken for it.
func TestConsumerDeletedStatus(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 10*time.Second)
	js, _ := jetstream.New(nc)
	stream, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	svc := proto.MustService("T/CONS/DEL")
	cons, err := streams.QueueConsumer(ctx, stream, svc)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	pull := "$JS.API.CONSUMER.MSG.NEXT." + proto.QueueStream + "." + cons.CachedInfo().Name
	if err := nc.PublishRequest(pull, inbox.Subject, []byte(`{"batch":1,"expires":100000000}`)); err != nil {
		t.Fatal(err)
	}
	timeout, err := inbox.NextMsg(5 * time.Second) // expires: 408, the consumer is fine
	if err != nil {
		t.Fatal(err)
	}
	if consumerDeleted(timeout) {
		t.Fatalf("status %q %q taken for a deleted consumer", timeout.Header.Get(proto.HdrNATSStatus), timeout.Header.Get(hdrNATSDescription))
	}
	if err := nc.PublishRequest(pull, inbox.Subject, []byte(`{"batch":1,"expires":30000000000}`)); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		if err != nil || info.NumWaiting != 1 {
			return fmt.Errorf("pull request not waiting yet: %v", err)
		}
		return nil
	})
	if err := stream.DeleteConsumer(ctx, proto.ConsumerName(svc)); err != nil {
		t.Fatal(err)
	}
	deleted, err := inbox.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !consumerDeleted(deleted) {
		t.Fatalf("status %q %q not recognised as a deleted consumer", deleted.Header.Get(proto.HdrNATSStatus), deleted.Header.Get(hdrNATSDescription))
	}
}

// A replica whose queue consumer is deleted creates it again and goes on
// serving queued requests.
func TestReplicaRecreatesDeletedConsumer(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 20*time.Second)
	cfg, err := resolve(noEnv, []Option{WithConn(testutil.Connect(t, s)), WithService("T/CONS/AGAIN"), WithHeartbeat(50 * time.Millisecond), WithSignals(false), WithLogger(quiet), WithGrace(0)})
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(cfg, HandlerFunc(func(ctx context.Context, c *Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(m.Data)
	}), cfg.conn)
	if err := r.start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.shutdown(0) })
	name := proto.ConsumerName(cfg.service)
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		info, err := r.js.Consumer(ctx, proto.QueueStream, name)
		if err != nil {
			return err
		}
		if i, err := info.Info(ctx); err != nil || i.NumWaiting != 1 {
			return fmt.Errorf("replica's pull request not waiting yet: %v", err)
		}
		return nil
	})
	if err := r.js.DeleteConsumer(ctx, proto.QueueStream, name); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	caller, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, err := r.js.Consumer(ctx, proto.QueueStream, name)
		return err
	})
	q := nats.NewMsg(proto.QueueSubject(cfg.service))
	q.Header.Set(proto.HdrReply, caller.Subject)
	q.Data = []byte("queued")
	if _, err := js.PublishMsg(ctx, q); err != nil {
		t.Fatal(err)
	}
	reply, err := caller.NextMsg(10 * time.Second)
	if err != nil || string(reply.Data) != "queued" {
		t.Fatalf("queued request after the consumer came back: %v %v", reply, err)
	}
}

// Each pull answers to a reply subject of its own, so the statuses of a
// pull the replica gave up on (it pulls again after a reconnect or a new
// consumer leader while the old pull may live on at the server) open no
// new pull: before, every such status opened one more, and a replica
// kept several pulls open for good.
func TestStatusOfAPullGivenUpOnIsIgnored(t *testing.T) {
	s := testutil.StartNATS(t)
	r := echoReplica(t, testutil.Connect(t, s), proto.MustService("T/PULL/GEN"))
	r.mu.Lock()
	old := r.pullReplyLocked()
	r.pullAgainLocked() // as after a reconnect
	current, gen := r.pullReplyLocked(), r.pullGen
	r.mu.Unlock()
	if old == current {
		t.Fatalf("the new pull answers to the old one's subject %s", old)
	}
	status := func(subject, code string) {
		m := nats.NewMsg(subject)
		m.Header.Set(proto.HdrNATSStatus, code)
		r.onPulled(m)
	}
	status(old, "408") // the old pull expires
	status(old, "100")
	r.mu.Lock()
	if r.pullGen != gen || !r.pulling {
		t.Errorf("after the old pull's 408: pull %d (want %d still), open %v", r.pullGen, gen, r.pulling)
	}
	r.mu.Unlock()
	status(current, "408") // the current one expires: pull again
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pullGen != gen+1 || !r.pulling {
		t.Errorf("after the current pull's 408: pull %d (want %d), open %v", r.pullGen, gen+1, r.pulling)
	}
}
