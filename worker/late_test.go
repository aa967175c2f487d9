package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// rawOp sends op for conversation conv to replica id and returns the reply.
func rawOp(t *testing.T, nc *nats.Conn, id, conv, op string) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(proto.ReplicaSubject(id))
	m.Header.Set(proto.HdrOp, op)
	m.Header.Set(proto.HdrConv, conv)
	r, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatalf("%s got no answer: %v", op, err)
	}
	return r
}

// A message for a conversation that has ended is answered at once with
// the conversation's end reason, even while its handler is still running
// (here: it ignores the CANCEL and goes on working).
func TestLateMessagesGetTheEndAtOnce(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	const svc = "T/LATE/X"
	unblock := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(unblock) }) })
	ctx, cancel := context.WithCancel(context.Background())
	done := runReplica(t, ctx, func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if err := c.Reply(m.Data); err != nil {
			return err
		}
		<-unblock // busy: takes no notice of the CANCEL
		return nil
	}, worker.WithConn(testutil.Connect(t, s)), worker.WithService(svc), worker.WithReplicaID("late1"))
	t.Cleanup(func() {
		once.Do(func() { close(unblock) })
		cancel()
		waitRun(t, done, 10*time.Second)
	})

	open := nats.NewMsg(proto.WarmSubject(proto.MustService(svc)))
	open.Header.Set(proto.HdrOp, proto.OpNew)
	r, err := nc.RequestMsg(open, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conv := r.Header.Get(proto.HdrConv)
	if e := proto.ErrorFromHeader(rawOp(t, nc, "late1", conv, proto.OpCancel).Header); e != nil {
		t.Fatalf("CANCEL: %v", e)
	}
	for _, op := range []string{proto.OpOld, proto.OpEOC, proto.OpPing, proto.OpOld} {
		e := proto.ErrorFromHeader(rawOp(t, nc, "late1", conv, op).Header)
		if e == nil || e.Code != proto.CodeCancelled {
			t.Fatalf("%s after CANCEL: %v, want 0003/0011", op, e)
		}
	}
}
