package worker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// A queued request is run only once the server confirmed its ack: one
// whose ack nobody confirms (here an ack subject without a server behind
// it, as when the ack is lost in a NATS restart) gives its slot back and
// is not run, for JetStream redelivers it after AckWait. A confirmed ack
// runs it.
func TestQueuedRequestRunsOnlyAfterConfirmedAck(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	cfg, err := resolve(noEnv, []Option{WithConn(nc), WithService("T/ACK/X"), WithReplicaID("ack1"), WithCapacity(1), WithSignals(false), WithLogger(quiet)})
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(cfg, HandlerFunc(func(ctx context.Context, c *Conv) error { return nil }), nc)
	r.maxPayload.Store(nc.MaxPayload())
	msg := func() *nats.Msg {
		m := nats.NewMsg(proto.QueueSubject(cfg.service))
		m.Header.Set(proto.HdrReply, "muster.test.caller")
		m.Header.Set(proto.HdrDeadline, proto.FormatDeadline(time.Now().Add(time.Minute)))
		return m
	}

	c, handled := r.accept(msg(), "muster.test.caller", "muster.test.noack")
	if c != nil || !handled {
		t.Fatalf("unconfirmed ack: accept = %v, %v; want nil, true (not run)", c, handled)
	}
	r.mu.Lock()
	active, convs := r.active, len(r.convs)+len(r.calls)
	r.mu.Unlock()
	if active != 0 || convs != 0 {
		t.Fatalf("slot not given back: active %d, %d conversations", active, convs)
	}

	acks, err := nc.Subscribe("muster.test.ack", func(m *nats.Msg) { _ = m.Respond(nil) }) // confirms, as JetStream does
	if err != nil {
		t.Fatal(err)
	}
	defer acks.Unsubscribe()
	if c, _ := r.accept(msg(), "muster.test.caller", "muster.test.ack"); c == nil {
		t.Fatal("confirmed ack: request not taken")
	} else {
		r.finished(c)
	}
}

// Conversation ids are random, not a counter: knowing one's own says
// nothing about another's (a PING scan finds nothing).
func TestConversationIdsAreNotGuessable(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	cfg, err := resolve(noEnv, []Option{WithConn(nc), WithService("T/IDS/X"), WithReplicaID("ids1"), WithCapacity(4), WithSignals(false), WithLogger(quiet)})
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(cfg, HandlerFunc(func(ctx context.Context, c *Conv) error { return nil }), nc)
	r.maxPayload.Store(nc.MaxPayload())
	seen := map[string]bool{}
	for range 3 {
		m := nats.NewMsg(proto.WarmSubject(cfg.service))
		m.Header.Set(proto.HdrOp, proto.OpNew)
		c, _ := r.accept(m, "muster.test.discard", "")
		if c == nil {
			t.Fatal("slot not free")
		}
		if len(c.id) != 22 || proto.ValidID(c.id) != nil || seen[c.id] {
			t.Fatalf("conversation id %q: want 22 characters of fresh randomness", c.id)
		}
		seen[c.id] = true
		defer r.finished(c)
	}
}
