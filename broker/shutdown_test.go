package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestShutdownWaitsForHandlers sends a burst of requests and shuts the
// broker down while it is still queueing them: when Shutdown returns, every
// request NATS delivered is queued, no handler runs, and nothing changes
// afterwards.
func TestShutdownWaitsForHandlers(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	b, err := broker.Start(testutil.Context(t, 10*time.Second), nc, broker.Config{Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	const svc = "T/SHUT/DOWN"
	harness.RegisterAttach(t, &harness.Env{T: t, NC: testutil.Connect(t, s), Broker: b}, "shutdown-attach", svc)

	pub := testutil.Connect(t, s)
	const n = 400
	inbox := pub.NewInbox()
	for i := 0; i < n; i++ {
		if err := pub.PublishRequest(proto.CallSubject(proto.MustService(svc)), inbox, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error { // the broker is busy with them
		if total(t, b, svc) == 0 {
			return fmt.Errorf("no request queued yet")
		}
		return nil
	})

	if err := b.Shutdown(testutil.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	gotTotal, gotQueued := total(t, b, svc), queued(t, pub)
	if gotTotal != n || gotQueued != uint64(n) {
		t.Errorf("when Shutdown returned: %d requests counted, %d queued; want %d, %d", gotTotal, gotQueued, n, n)
	}
	// Had Shutdown returned early, handlers would still be queueing: wait
	// until all the requests are queued, then look again.
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if q := queued(t, pub); q != n {
			return fmt.Errorf("%d of %d requests queued", q, n)
		}
		return nil
	})
	if after, q := total(t, b, svc), queued(t, pub); after != gotTotal || q != gotQueued {
		t.Fatalf("after Shutdown returned, handlers went on: counted %d → %d, queued %d → %d", gotTotal, after, gotQueued, q)
	}
}

// TestShutdownIdempotentAndBounded: a Shutdown whose context has already
// ended returns at once; concurrent and repeated calls all return nil once
// the broker has stopped.
func TestShutdownIdempotentAndBounded(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	_ = e.Broker.Shutdown(ended) // nil or ended's error: either way at once
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown with an ended context took %v", d)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.Broker.Shutdown(testutil.Context(t, 10*time.Second))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func total(t *testing.T, b *broker.Broker, svc string) int64 {
	t.Helper()
	for _, s := range b.Stats(testutil.Context(t, 5*time.Second)) {
		if s.Service == svc {
			return s.TotalRequests
		}
	}
	return 0
}

// queued counts the requests in the queue stream.
func queued(t *testing.T, nc *nats.Conn) uint64 {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 5*time.Second)
	st, err := js.Stream(ctx, proto.QueueStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
