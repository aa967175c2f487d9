package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

// connect opens a connection with Muster's own reconnect settings (every
// 250 ms, forever), as `muster broker` and the replicas use.
func connect(t *testing.T, s *server.Server) *nats.Conn {
	t.Helper()
	opts, err := natsconn.Config{URL: s.ClientURL(), Name: t.Name()}.Options()
	if err != nil {
		t.Fatal(err)
	}
	return testutil.Connect(t, s, opts...)
}

// attachWriter keeps an attach manager record offering svc fresh, every
// heartbeat, as a real attach manager does (retrying when NATS is away),
// until ctx ends. It returns when the record was last written, and a
// function that holds the writes until a given time, as a manager whose
// connection comes back later than the broker's.
func attachWriter(ctx context.Context, t *testing.T, nc *nats.Conn, id, svc string, hb time.Duration) (func() time.Time, func(time.Time)) {
	t.Helper()
	js, _ := jetstream.New(nc)
	kv, err := streams.EnsureBucket(testutil.Context(t, 5*time.Second), js, proto.AttachBucket)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last, hold time.Time
	write := func() {
		mu.Lock()
		held := time.Now().Before(hold)
		mu.Unlock()
		if held {
			return
		}
		b, _ := json.Marshal(proto.AttachInfo{ID: id, Host: "test", Version: "test", Services: []string{svc},
			HeartbeatMS: hb.Milliseconds(), Updated: time.Now().UnixMilli(), MaxReplicas: 10})
		wctx, cancel := context.WithTimeout(ctx, hb)
		defer cancel()
		if _, err := kv.Put(wctx, id, b); err == nil {
			mu.Lock()
			last = time.Now()
			mu.Unlock()
		}
	}
	write()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(hb)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				write()
			}
		}
	}()
	t.Cleanup(func() { <-done })
	return func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return last
		}, func(until time.Time) {
			mu.Lock()
			defer mu.Unlock()
			hold = until
		}
}

// queueServer serves svc's queue the way §6.2 says a replica does: pull
// one, +ACK, reply to Muster-Reply. It stands in for a replica so that
// this test measures the broker, not the worker's own reconnect; it uses
// plain fetches, which recover by themselves after a NATS restart.
func queueServer(ctx context.Context, t *testing.T, nc *nats.Conn, svc proto.Service) {
	t.Helper()
	js, _ := jetstream.New(nc)
	sctx := testutil.Context(t, 5*time.Second)
	q, err := streams.EnsureQueue(sctx, js)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := streams.QueueConsumer(sctx, q, svc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			batch, err := cons.Fetch(16, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			for m := range batch.Messages() {
				_ = m.Ack()
				_ = nc.Publish(m.Headers().Get(proto.HdrReply), m.Data())
			}
		}
	}()
	t.Cleanup(func() { <-done })
}

// outcome is one call's result.
type outcome struct {
	sent time.Time
	code string // "ok", a Muster code, or "no reply"
}

// TestNoFalseNotRegisteredAcrossNATSRestart runs steady load (80 calls/s)
// against a service that an attach manager offers, restarts the NATS
// server (same port, same store) and keeps it down until the manager's
// record is older than three heartbeats: no call gets 0007/0007, and
// calls sent 2 s after the server is back all succeed. Before the fix the
// broker's watchers were silent for 13–16 s and it answered 0007/0007 for
// the whole time.
func TestNoFalseNotRegisteredAcrossNATSRestart(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := connect(t, s)
	b, err := broker.Start(testutil.Context(t, 10*time.Second), nc, broker.Config{Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	const name = "T/RESTART/SVC"
	svc := proto.MustService(name)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	const hb = 200 * time.Millisecond
	lastWrite, holdWrites := attachWriter(ctx, t, connect(t, s), "restart-attach", name, hb)
	queueServer(ctx, t, connect(t, s), svc)

	caller := connect(t, s)
	call := func() outcome {
		o := outcome{sent: time.Now()}
		m := nats.NewMsg(proto.CallSubject(svc))
		m.Header.Set(proto.HdrTimeout, "4000")
		m.Data = []byte("x")
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := caller.RequestMsgWithContext(rctx, m)
		switch {
		case err != nil:
			o.code = "no reply (" + err.Error() + ")"
		case proto.ErrorFromHeader(r.Header) != nil:
			o.code = proto.ErrorFromHeader(r.Header).Code.String()
		case string(r.Data) != "x":
			o.code = "wrong reply"
		default:
			o.code = "ok"
		}
		return o
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if o := call(); o.code != "ok" {
			return fmt.Errorf("warm-up call: %s", o.code)
		}
		return nil
	})

	var mu sync.Mutex
	var out []outcome
	var calls sync.WaitGroup
	load, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		tk := time.NewTicker(time.Second / 80)
		defer tk.Stop()
		for {
			select {
			case <-load.Done():
				return
			case <-tk.C:
			}
			calls.Add(1)
			go func() {
				defer calls.Done()
				o := call()
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}()
		}
	}()
	sent := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(out)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { // load before the restart
		if n := sent(); n < 40 {
			return fmt.Errorf("%d calls done", n)
		}
		return nil
	})
	// The manager writes nothing while NATS is down (nats.go would buffer
	// its writes and deliver them at the reconnect), and writes again only
	// two heartbeats after the broker is back: until then its record is
	// older than three heartbeats.
	holdWrites(time.Now().Add(time.Hour))
	nc.SetReconnectHandler(func(*nats.Conn) { holdWrites(time.Now().Add(2 * hb)) })
	s = testutil.RestartNATS(t, s, func() {
		// Down until the attach manager's record is older than four
		// heartbeats, so a broker that judged it by age alone would say
		// nobody offers the service.
		testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if age := time.Since(lastWrite()); age <= 4*hb {
				return fmt.Errorf("attach record only %v old", age)
			}
			return nil
		})
	})
	back := time.Now()
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error { // load after the restart
		if time.Since(back) < 4*time.Second {
			return fmt.Errorf("only %v since the server came back", time.Since(back))
		}
		return nil
	})
	stopLoad()
	<-loadDone
	calls.Wait()
	// Shut the broker down while the restarted server still runs (its
	// cleanup, registered last, runs first).
	if err := b.Shutdown(testutil.Context(t, 10*time.Second)); err != nil {
		t.Error(err)
	}

	mu.Lock()
	defer mu.Unlock()
	false7, lastBad, firstOK := 0, time.Time{}, time.Time{}
	for _, o := range out {
		if o.code == proto.CodeNotRegistered.String() {
			false7++
		}
		if o.code != "ok" && o.sent.After(lastBad) {
			lastBad = o.sent
		}
		if o.code == "ok" && o.sent.After(back) && (firstOK.IsZero() || o.sent.Before(firstOK)) {
			firstOK = o.sent
		}
	}
	t.Logf("%d calls: %s; first success sent %v after the server was back; last failure sent %v after",
		len(out), summary(out), firstOK.Sub(back).Round(time.Millisecond), lastBad.Sub(back).Round(time.Millisecond))
	if false7 != 0 {
		t.Errorf("%d false 0007/0007 replies for a service an attach manager offers", false7)
	}
	if firstOK.IsZero() {
		t.Fatal("no call succeeded after the restart")
	}
	if d := lastBad.Sub(back); d > 2*time.Second {
		t.Errorf("a call sent %v after the server was back failed; want all calls from 2 s on to succeed", d.Round(time.Millisecond))
	}
}

// summary counts outcomes by code.
func summary(out []outcome) string {
	n := map[string]int{}
	for _, o := range out {
		n[o.code]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += k + "=" + strconv.Itoa(n[k]) + " "
	}
	return s
}
