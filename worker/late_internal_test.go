package worker

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// An OLD that races the end of its conversation is answered whichever way
// the race goes: before the end by the handler or by the end itself, after
// it by the tombstone. None is left in the conversation's queue unread.
func TestOldRacingTheEndIsAnswered(t *testing.T) {
	const par, rounds = 8, 4000
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	cfg, err := resolve(noEnv, []Option{WithConn(nc), WithService("T/RACE/X"), WithReplicaID("race1"), WithCapacity(par), WithSignals(false), WithLogger(quiet)})
	if err != nil {
		t.Fatal(err)
	}
	// The handler answers the opening message and returns: its end races
	// the OLD the test routes in meanwhile.
	r := newReplica(cfg, HandlerFunc(func(ctx context.Context, c *Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(m.Data)
	}), nc)
	r.maxPayload.Store(nc.MaxPayload())
	inbox := nats.NewInbox()
	var answered atomic.Int64
	if _, err := nc.Subscribe(inbox+".*", func(*nats.Msg) { answered.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rounds; i++ {
		var wg sync.WaitGroup
		for j := 0; j < par; j++ {
			open := nats.NewMsg(proto.WarmSubject(cfg.service))
			open.Header.Set(proto.HdrOp, proto.OpNew)
			c, _ := r.accept(open, "muster.test.discard", "")
			if c == nil {
				t.Fatalf("round %d: slot not free", i)
			}
			old := nats.NewMsg(proto.ReplicaSubject("race1"))
			old.Reply = inbox + "." + strconv.Itoa(i*par+j)
			old.Header.Set(proto.HdrOp, proto.OpOld)
			old.Header.Set(proto.HdrConv, c.id)
			wg.Add(2)
			go func() { defer wg.Done(); r.serve(c) }()
			go func() { defer wg.Done(); r.onPrivate(old) }()
		}
		wg.Wait()
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := answered.Load(); n != par*rounds {
			return fmt.Errorf("%d of %d OLD messages answered", n, par*rounds)
		}
		return nil
	})
}
