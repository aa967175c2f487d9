package kvwatch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/musterhq/muster/internal/kvwatch"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seenKeys records what a follower applied.
type seenKeys struct {
	mu   sync.Mutex
	vals map[string]string
	at   map[string]time.Time
}

func (s *seenKeys) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() == jetstream.KeyValuePut {
		s.vals[e.Key()] = string(e.Value())
	} else {
		delete(s.vals, e.Key())
	}
	s.at[e.Key()] = time.Now()
}

func (s *seenKeys) get(k string) (string, time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vals[k]
	return v, s.at[k], ok
}

// follow runs a follower of a fresh bucket on nc until the test ends.
func follow(t *testing.T, nc *nats.Conn, cfg kvwatch.Config) (*kvwatch.Follower, jetstream.KeyValue, *seenKeys) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := streams.EnsureBucket(testutil.Context(t, 5*time.Second), js, "kvwatch_test")
	if err != nil {
		t.Fatal(err)
	}
	seen := &seenKeys{vals: map[string]string{}, at: map[string]time.Time{}}
	cfg.KV, cfg.Conn, cfg.Apply = kv, nc, seen.apply
	f := kvwatch.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
		}
	})
	return f, kv, seen
}

// put writes k=v, retrying while JetStream is not back yet.
func put(t *testing.T, kv jetstream.KeyValue, k, v string) time.Time {
	t.Helper()
	var at time.Time
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := kv.PutString(ctx, k, v)
		at = time.Now()
		return err
	})
	return at
}

// waitFor waits until the follower applied k=v and returns when.
func waitFor(t *testing.T, seen *seenKeys, k, v string, within time.Duration) time.Time {
	t.Helper()
	var at time.Time
	testutil.CheckFor(t, within, 5*time.Millisecond, func() error {
		got, when, ok := seen.get(k)
		if !ok || got != v {
			return fmt.Errorf("follower has %s=%q (present %v), want %q", k, got, ok, v)
		}
		at = when
		return nil
	})
	return at
}

// TestResumesAfterNATSRestart restarts the NATS server (same port, same
// store): a record put after the restart reaches the follower within 1 s
// of the reconnect, and the follower is current again by then. nats.go's
// own watcher stayed silent for 13–16 s here.
func TestResumesAfterNATSRestart(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s, testutil.Reconnecting...)
	f, kv, seen := follow(t, nc, kvwatch.Config{})
	put(t, kv, "before", "1")
	waitFor(t, seen, "before", "1", 5*time.Second)
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !f.Current() {
			return fmt.Errorf("not current after catching up")
		}
		return nil
	})

	reconnected := make(chan time.Time, 1)
	nc.SetReconnectHandler(func(*nats.Conn) {
		select {
		case reconnected <- time.Now():
		default:
		}
	})
	testutil.RestartNATS(t, s, func() {
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if f.Current() {
				return fmt.Errorf("still current while the server is down")
			}
			return nil
		})
	})
	var back time.Time
	select {
	case back = <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect within 10s")
	}
	put(t, kv, "after", "2")
	got := waitFor(t, seen, "after", "2", 5*time.Second)
	if d := got.Sub(back); d > time.Second {
		t.Errorf("record put after the restart applied %v after the reconnect; want ≤ 1s", d)
	}
	t.Logf("put after restart applied %v after the reconnect", got.Sub(back).Round(time.Millisecond))
	if err := f.Sync(testutil.Context(t, time.Second)); err != nil {
		t.Errorf("not in sync within 1s of applying the new record: %v", err)
	}
	if v, _, _ := seen.get("before"); v != "1" {
		t.Errorf("record from before the restart lost: %q", v)
	}
}

// TestRecreatesStalledWatcher deletes the watcher's consumer on the
// server, so nats.go's watcher goes silent while the connection stays up:
// the follower's probe notices and a later put still arrives within two
// probes.
func TestRecreatesStalledWatcher(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	const probe = 200 * time.Millisecond
	var mu sync.Mutex
	var changes []bool
	f, kv, seen := follow(t, nc, kvwatch.Config{Probe: probe, Current: func(c bool) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	}})
	put(t, kv, "a", "1")
	waitFor(t, seen, "a", "1", 5*time.Second)

	js, _ := jetstream.New(nc)
	ctx := testutil.Context(t, 5*time.Second)
	stream, err := js.Stream(ctx, "KV_kvwatch_test")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name := range stream.ConsumerNames(ctx).Name() {
		if err := stream.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("deleted %d consumers, want the watcher's one", n)
	}
	at := put(t, kv, "b", "2")
	got := waitFor(t, seen, "b", "2", 5*time.Second)
	if d := got.Sub(at); d > 2*probe+500*time.Millisecond {
		t.Errorf("put after the stall applied %v later; want ≤ two probes", d)
	}
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) < 3 || !changes[0] || changes[1] || !changes[len(changes)-1] {
		t.Errorf("Current changes = %v; want true, false (stall), …, true", changes)
	}
}

// TestUpdatesOnlyAndSync: with UpdatesOnly, records stored before Run are
// not applied, later ones are, each once; Sync returns once a record
// stored before it was called is applied.
func TestUpdatesOnlyAndSync(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	js, _ := jetstream.New(nc)
	ctx := testutil.Context(t, 5*time.Second)
	kv, err := streams.EnsureBucket(ctx, js, "kvwatch_test")
	if err != nil {
		t.Fatal(err)
	}
	put(t, kv, "old", "0")
	var mu sync.Mutex
	count := map[string]int{}
	seen := &seenKeys{vals: map[string]string{}, at: map[string]time.Time{}}
	var lastRev uint64
	var outOfOrder []uint64
	f2 := kvwatch.New(kvwatch.Config{KV: kv, Conn: nc, UpdatesOnly: true, Apply: func(e jetstream.KeyValueEntry) {
		mu.Lock()
		count[e.Key()]++
		if e.Revision() <= lastRev {
			outOfOrder = append(outOfOrder, e.Revision())
		}
		lastRev = e.Revision()
		mu.Unlock()
		seen.apply(e)
	}})
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f2.Run(rctx) }()
	defer func() { cancel(); <-done }()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !f2.Current() {
			return fmt.Errorf("not current")
		}
		return nil
	})
	for i := 0; i < 50; i++ {
		put(t, kv, "new", fmt.Sprint(i))
	}
	if err := f2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _, ok := seen.get("new"); !ok || v != "49" {
		t.Fatalf("after Sync, new = %q (%v); want 49", v, ok)
	}
	mu.Lock()
	defer mu.Unlock()
	// The bucket keeps one revision per key, so a put that a later put
	// replaced before the watcher reached it is gone from the stream and
	// never delivered ("nothing skipped that the bucket still stores"):
	// new is applied between 1 and 50 times, each revision once.
	if count["old"] != 0 || count["new"] < 1 || count["new"] > 50 {
		t.Fatalf("applied old %d times, new %d times; want 0 and 1..50", count["old"], count["new"])
	}
	if len(outOfOrder) > 0 {
		t.Fatalf("revisions applied again or out of order: %v", outOfOrder)
	}
}

// TestRunEndsWhenConnectionCloses: Run returns, not current, when its
// connection closes for good.
func TestRunEndsWhenConnectionCloses(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	js, _ := jetstream.New(nc)
	kv, err := streams.EnsureBucket(testutil.Context(t, 5*time.Second), js, "kvwatch_test")
	if err != nil {
		t.Fatal(err)
	}
	f := kvwatch.New(kvwatch.Config{KV: kv, Conn: nc, Apply: func(jetstream.KeyValueEntry) {}})
	done := make(chan struct{})
	go func() { defer close(done); f.Run(context.Background()) }()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !f.Current() {
			return fmt.Errorf("not current")
		}
		return nil
	})
	nc.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running 5s after its connection closed")
	}
	if f.Current() {
		t.Fatal("current after Run returned")
	}
}
