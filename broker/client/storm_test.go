package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestResendStormCluster: a burst of calls to a service with no replica
// (attachable, nothing starts), on a 3-node JetStream cluster with the
// default ping interval. The broker queues requests one at a time (its
// call subscription's callback waits for each JetStream ack), so the tail
// of a burst waits for its "queued" behind the others. Such a caller must
// not take the slow broker for a dead one: repeats used to go out every
// ping interval and joined the same backlog (5,000 calls made 23,937
// broker messages and kept the broker publishing for 11.3 s instead of
// 3.4 s). Repeats now wait 10 ping intervals and back off (roundtrip.go).
//
// What a caller sees depends on the machine's speed (under the race
// detector on 2 cores the broker queues ~150 requests a second, so the
// tail of 2,000 calls waits past the first repeat by design), so the test
// checks the policy on every request: no copy sooner than half the first
// gap after the one before it, no more copies than the schedule allows
// within the call's deadline, and, when the broker queued every first
// copy before any repeat was due, no repeat at all. It runs 2,000 calls;
// STORM_N and STORM_PING change the load.
func TestResendStormCluster(t *testing.T) {
	cl := testutil.StartCluster(t, 3)
	conn := func(url string) *nats.Conn {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bnc := conn(cl.URL())
	b, err := broker.Start(ctx, bnc, broker.Config{Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	const svc = "T/ONCE/STORMC"
	e := &harness.Env{T: t, NC: bnc, Broker: b}
	harness.RegisterAttach(t, e, "stormc-attach", svc)
	var msgs, last atomic.Int64
	t0 := time.Now()
	// The spy and the client on the same node: the spy's interest is
	// there once its Flush returns, while on another node it would reach
	// the client's only when the route has passed it on (one CI run lost
	// every request to the spy that way).
	node0 := "nats://" + cl.Config(0).Listen
	spy := conn(node0)
	var smu sync.Mutex
	copies := map[string][]time.Duration{} // reply subject → arrivals
	if _, err := spy.Subscribe(proto.CallSubject(proto.MustService(svc)), func(m *nats.Msg) {
		at := time.Since(t0)
		msgs.Add(1)
		last.Store(int64(at))
		smu.Lock()
		copies[m.Reply] = append(copies[m.Reply], at)
		smu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	var qmsgs, qlast atomic.Int64
	if _, err := spy.Subscribe(proto.QueueSubject(proto.MustService(svc)), func(*nats.Msg) { qmsgs.Add(1); qlast.Store(int64(time.Since(t0))) }); err != nil {
		t.Fatal(err)
	}
	spy.Flush()
	c, err := client.New(conn(node0), client.WithPingInterval(pingForStorm))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := stormN
	const callTimeout = 8 * time.Second
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			_, err := c.Call(ctx, svc, []byte("x"))
			var pe *proto.Error
			k := "nil"
			if err != nil {
				k = "other: " + err.Error()
			}
			if errors.As(err, &pe) {
				k = pe.Error()
				if len(k) > 70 {
					k = k[:70]
				}
			}
			mu.Lock()
			codes[k]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("%d calls, ping %v: %d messages to the broker subject, the last %v after the start; %v", n, pingForStorm, msgs.Load(), time.Duration(last.Load()), time.Since(start))
	t.Logf("broker published %d copies to the queue subject, the last %v after the start", qmsgs.Load(), time.Duration(qlast.Load()))
	for k, v := range codes {
		t.Logf("%5d %s", v, k)
	}
	schedule := client.ResendSchedule(pingForStorm, callTimeout)
	firstGap := 10 * pingForStorm
	smu.Lock()
	defer smu.Unlock()
	if len(copies) != n {
		t.Errorf("%d calls, %d distinct requests at the broker subject", n, len(copies))
	}
	bad := 0
	for reply, at := range copies {
		if len(at) > 1+len(schedule) {
			bad++
			if bad <= 5 {
				t.Errorf("%s: %d copies at %v; the schedule allows %d within %v (repeats at %v)", reply, len(at), at, 1+len(schedule), callTimeout, schedule)
			}
			continue
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i] - at[i-1]; gap < firstGap/2 {
				bad++
				if bad <= 5 {
					t.Errorf("%s: copies at %v: a repeat %v after the one before (the first gap is %v): a slow broker is taken for a dead one", reply, at, gap, firstGap)
				}
				break
			}
		}
	}
	// Every first copy queued before the first repeat could be due (with a
	// ping interval to spare): nobody had a reason to repeat.
	if qdone := time.Duration(qlast.Load()); qmsgs.Load() >= int64(n) && qdone+pingForStorm < firstGap && msgs.Load() != int64(n) {
		t.Errorf("every request was queued %v after the start, before any repeat was due (%v), yet %d calls sent %d requests", qdone, firstGap, n, msgs.Load())
	}
}

var pingForStorm = func() time.Duration {
	d, err := time.ParseDuration(os.Getenv("STORM_PING"))
	if err != nil {
		return 500 * time.Millisecond
	}
	return d
}()

var stormN = func() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("STORM_N"), &n); err != nil || n <= 0 {
		return 2000
	}
	return n
}()
