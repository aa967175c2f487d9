package worker

import (
	"context"
	"errors"
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
			cfg, err := resolve(noEnv, []Option{WithConn(testutil.Connect(t, s)), WithService(svc.String()),
				WithHeartbeat(5 * time.Second), WithIdleTimeout(0), WithSignals(false), WithLogger(quiet), WithGrace(0)})
			if err != nil {
				t.Fatal(err)
			}
			r := newReplica(cfg, HandlerFunc(func(ctx context.Context, c *Conv) error {
				m, err := c.Receive(ctx)
				if err != nil {
					return err
				}
				runs.Add(1)
				return c.Reply(m.Data)
			}), cfg.conn)
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
			if err := r.start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.shutdown(0) })
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
			time.Sleep(200 * time.Millisecond) // a second run would come now (a redelivery is immediate after -NAK)
			if n := runs.Load(); n != 1 {
				t.Fatalf("the handler ran %d times, want once", n)
			}
		})
	}
}
