package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// A replica that starts first on a bare server (no broker or attach
// manager yet) makes what it needs: its registration (written without a
// look-up of the bucket) lands in a bucket it creates, its queue consumer
// (looked up, not found, created) serves a queued request, and shutdown
// deletes the record again.
func TestStartOnBareServer(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 20*time.Second)
	svc := proto.MustService("T/BARE/START")
	cfg, err := resolve(noEnv, []Option{WithConn(nc), WithService(svc.String()), WithIdleTimeout(time.Hour), WithSignals(false), WithLogger(quiet)})
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(cfg, HandlerFunc(func(ctx context.Context, c *Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(m.Data)
	}), nc)
	if err := r.start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			r.shutdown(0)
		}
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, proto.ReplicaBucket)
	if err != nil {
		t.Fatalf("bucket not made: %v", err)
	}
	e, err := kv.Get(ctx, cfg.replicaID)
	if err != nil {
		t.Fatalf("registration not written: %v", err)
	}
	if ri, err := proto.DecodeReplicaInfo(e.Value()); err != nil || ri.ID != cfg.replicaID || ri.State != proto.StateReady {
		t.Fatalf("registration %+v (%v)", ri, err)
	}

	caller, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	q := nats.NewMsg(proto.QueueSubject(svc))
	q.Header.Set(proto.HdrReply, caller.Subject)
	q.Data = []byte("queued")
	if _, err := js.PublishMsg(ctx, q); err != nil {
		t.Fatal(err)
	}
	if reply, err := caller.NextMsg(10 * time.Second); err != nil || string(reply.Data) != "queued" {
		t.Fatalf("queued request: %v %v", reply, err)
	}

	r.shutdown(0)
	stopped = true
	if _, err := kv.Get(ctx, cfg.replicaID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("registration after shutdown: %v, want it deleted", err)
	}
}
