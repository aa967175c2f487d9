package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// A queued request whose ack the server does not confirm is run exactly
// once, and without waiting for the consumer's AckWait (5 s): if the ack
// took effect and only its confirmation was lost (a consumer leader that
// died just after), nobody else would run it, so this replica does; if it
// did not, the replica hands it back and runs it when it comes again.
func TestUnconfirmedAckRunsOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		applied bool // the ack reached the queue, its answer did not
	}{
		{"ack applied, confirmation lost", true},
		{"ack not applied", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testutil.StartNATS(t)
			nc := testutil.Connect(t, s)
			svc := proto.MustService("T/ACK/LOST")
			ctx := testutil.Context(t, 20*time.Second)
			var runs atomic.Int64
			r := testReplica(t, testutil.Connect(t, s), svc, func(ctx context.Context, c *Conv) error {
				m, err := c.Receive(ctx)
				if err != nil {
					return err
				}
				runs.Add(1)
				return c.Reply(m.Data)
			})
			var failed atomic.Bool
			r.ackHook = func(ackTo string) error {
				if failed.CompareAndSwap(false, true) { // the first ack only
					if tc.applied {
						if err := r.ackSync(ackTo); err != nil {
							t.Errorf("the real ack: %v", err)
						}
					}
					return errors.New("no answer from the consumer's leader")
				}
				return r.ackSync(ackTo)
			}
			startTestReplica(t, r)
			caller, err := nc.SubscribeSync(nats.NewInbox())
			if err != nil {
				t.Fatal(err)
			}
			js, _ := jetstream.New(nc)
			q := nats.NewMsg(proto.QueueSubject(svc))
			q.Header.Set(proto.HdrReply, caller.Subject)
			q.Data = []byte("once")
			start := time.Now()
			if _, err := js.PublishMsg(ctx, q); err != nil {
				t.Fatal(err)
			}
			for {
				reply, err := caller.NextMsg(4 * time.Second) // less than AckWait
				if err != nil {
					t.Fatalf("no reply %v after the request was queued: %v", time.Since(start).Round(time.Millisecond), err)
				}
				if reply.Header.Get(proto.HdrStatus) != "" {
					continue // working
				}
				if string(reply.Data) != "once" {
					t.Fatalf("reply %q", reply.Data)
				}
				break
			}
			if !failed.Load() {
				t.Fatal("the ack stand-in was never used")
			}
			// Nothing can run it again once the queue holds it no more
			// (acked) and nothing of it is delivered and unacked.
			testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
				stream, err := js.Stream(ctx, proto.QueueStream)
				if err != nil {
					return err
				}
				cons, err := stream.Consumer(ctx, proto.ConsumerName(svc))
				if err != nil {
					return err
				}
				si, err1 := stream.Info(ctx)
				ci, err2 := cons.Info(ctx)
				if err := errors.Join(err1, err2); err != nil {
					return err
				}
				if si.State.Msgs != 0 || ci.NumAckPending != 0 {
					return fmt.Errorf("queue holds %d, %d delivered and unacked", si.State.Msgs, ci.NumAckPending)
				}
				return nil
			})
			if n := runs.Load(); n != 1 {
				t.Fatalf("the handler ran %d times, want once", n)
			}
		})
	}
}
