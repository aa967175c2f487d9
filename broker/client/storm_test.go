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
// of a burst waits longer than a ping interval for its "queued", and
// every such caller sends its request again, once per interval: the
// repeats join the same backlog. Measured (2 cores): 5,000 calls made
// 23,937 broker messages and kept the broker publishing for 11.3 s
// (3.4 s at edeb040); 9,000 calls made 56,027 and 20 calls were answered
// "deadline passed before the request was queued" after 15 s (4.9 s and
// no such answer at edeb040). Repeats now wait 10 ping intervals and
// back off (roundtrip.go): 5,000 calls, 5,000 messages. It runs 2,000
// calls (about 10 s); STORM_N and STORM_PING change the load.
func TestResendStormCluster(t *testing.T) {
	cl := testutil.StartCluster(t, 3)
	conn := func() *nats.Conn {
		nc, err := nats.Connect(cl.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bnc := conn()
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
	spy := conn()
	if _, err := spy.Subscribe(proto.CallSubject(proto.MustService(svc)), func(*nats.Msg) { msgs.Add(1); last.Store(int64(time.Since(t0))) }); err != nil {
		t.Fatal(err)
	}
	var qmsgs, qlast atomic.Int64
	if _, err := spy.Subscribe(proto.QueueSubject(proto.MustService(svc)), func(*nats.Msg) { qmsgs.Add(1); qlast.Store(int64(time.Since(t0))) }); err != nil {
		t.Fatal(err)
	}
	spy.Flush()
	c, err := client.New(conn(), client.WithPingInterval(pingForStorm))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := stormN
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
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
	if got := msgs.Load(); got > int64(n)*12/10 {
		t.Errorf("%d calls sent %d requests to the brokers: a slow broker is taken for a dead one and repeats pile onto its backlog", n, got)
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
