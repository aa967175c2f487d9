package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

func noEnv(string) (string, bool) { return "", false }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// A start that fails (here: the registration write, as the bucket only
// takes tiny values) leaves nothing of the replica behind: no goroutine,
// no subscription on the caller's connection, no idle timer, no live
// context, no pull request at the server.
func TestFailedStartLeavesNothing(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 20*time.Second)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	svc := proto.MustService("T/FAIL/START")
	// Create what the replica would, so that the server starts none of its
	// own goroutines (stream, consumer, bucket) while the replica starts.
	stream, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.QueueConsumer(ctx, stream, svc); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: proto.ReplicaBucket, MaxValueSize: 16}); err != nil {
		t.Fatal(err)
	}
	rnc := testutil.Connect(t, s)
	// The connection's request multiplexer belongs to the connection, not
	// to the replica: open it before counting.
	_, _ = rnc.Request("muster.test.nobody", nil, time.Second)
	subs := rnc.NumSubscriptions()
	cfg, err := resolve(noEnv, []Option{WithConn(rnc), WithService(svc.String()), WithIdleTimeout(time.Hour), WithSignals(false), WithLogger(quiet)})
	if err != nil {
		t.Fatal(err)
	}
	before := goleak.IgnoreCurrent()
	r := newReplica(cfg, HandlerFunc(func(context.Context, *Conv) error { return nil }), rnc)
	if err := r.start(ctx); err == nil {
		t.Fatal("start succeeded although the registration cannot be written")
	}
	if n := rnc.NumSubscriptions(); n != subs {
		t.Errorf("%d subscriptions left on the connection, want %d", n, subs)
	}
	if r.baseCtx.Err() == nil {
		t.Error("the replica's context is still live")
	}
	if r.idle != nil && r.idle.Stop() {
		t.Error("the idle timer was still running")
	}
	cons, err := stream.Consumer(ctx, proto.ConsumerName(svc))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumWaiting != 0 {
		t.Errorf("%d pull requests left open at the server", info.NumWaiting)
	}
	goleak.VerifyNone(t, before)
}

// A bounded wait that gives up leaves no goroutine behind.
func TestGroupWaitLeavesNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	r := &replica{}
	r.mu.Lock()
	r.serving.addLocked()
	r.mu.Unlock()
	if r.wait(&r.serving, 10*time.Millisecond) {
		t.Fatal("wait returned true with a member left")
	}
	goleak.VerifyNone(t, before)
	r.doneWith(&r.serving)
	if !r.wait(&r.serving, time.Second) {
		t.Fatal("wait returned false with the group empty")
	}
}
