package client_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// benchSetup starts NATS, a broker, one echo replica of capacity 64, and a
// raw NATS echo responder (the baseline), each on its own connection.
func benchSetup(b *testing.B) (*harness.Env, *nats.Conn) {
	e := harness.Start(b, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithCapacity(64))
	srv := testutil.Connect(b, e.Server)
	if _, err := srv.QueueSubscribe("bench.raw.echo", "q", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	return e, testutil.Connect(b, e.Server)
}

// BenchmarkWarmCall measures one sequential call on the warm path against
// a raw NATS request/reply to an echo responder, in alternating rounds of
// the same run, and reports both latencies and their ratio.
func BenchmarkWarmCall(b *testing.B) {
	e, raw := benchSetup(b)
	payload := []byte("0123456789abcdef0123456789abcdef")
	ctx := context.Background()
	var musterNS, rawNS time.Duration
	var musterN, rawN int
	const round = 200
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := raw.Request("bench.raw.echo", payload, 5*time.Second); err != nil {
				b.Fatal(err)
			}
		}
		rawNS += time.Since(start)
		rawN += n
		start = time.Now()
		for i := 0; i < n; i++ {
			if _, err := e.Client.Call(ctx, demo.EchoService, payload); err != nil {
				b.Fatal(err)
			}
		}
		musterNS += time.Since(start)
		musterN += n
		done += n
	}
	m, r := float64(musterNS)/float64(musterN), float64(rawNS)/float64(rawN)
	b.ReportMetric(m, "muster-ns/call")
	b.ReportMetric(r, "raw-ns/req")
	b.ReportMetric(m/r, "latency-ratio")
}

// BenchmarkWarmThroughput runs 16 concurrent callers against the replica
// and 16 against the raw responder, alternating, and reports calls/s of
// each and the ratio (target ≥ 0.8).
func BenchmarkWarmThroughput(b *testing.B) {
	e, raw := benchSetup(b)
	payload := []byte("0123456789abcdef0123456789abcdef")
	ctx := context.Background()
	const workers = 16
	run := func(n int, call func() error) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		per := (n + workers - 1) / workers
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	var musterD, rawD time.Duration
	var total int
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(1600, b.N-done)
		rawD += run(n, func() error { _, err := raw.Request("bench.raw.echo", payload, 5*time.Second); return err })
		musterD += run(n, func() error { _, err := e.Client.Call(ctx, demo.EchoService, payload); return err })
		done += n
		total += ((n + workers - 1) / workers) * workers
	}
	m, r := float64(total)/musterD.Seconds(), float64(total)/rawD.Seconds()
	b.ReportMetric(m, "muster-calls/s")
	b.ReportMetric(r, "raw-req/s")
	b.ReportMetric(m/r, "throughput-ratio")
}

// BenchmarkConversation measures sequential conversations of 10 messages
// (NEW, 8 OLD, a last OLD the replica ends, as `muster bench conv` does)
// against 10 raw NATS requests, in alternating rounds of the same run, and
// reports the time and the allocations (the whole process: client,
// replica and NATS server) per message of each, and the ratios.
func BenchmarkConversation(b *testing.B) {
	e, raw := benchSetup(b)
	payload := []byte("0123456789abcdef0123456789abcdef")
	ctx := context.Background()
	const msgs, round = 10, 50
	var musterNS, rawNS time.Duration
	var musterAllocs, rawAllocs uint64
	var musterN, rawN int
	var ms runtime.MemStats
	mallocs := func() uint64 { runtime.ReadMemStats(&ms); return ms.Mallocs }
	var musterMsgs, rawMsgs int64
	inMsgs := func() int64 {
		v, err := e.Server.Varz(nil)
		if err != nil {
			b.Fatal(err)
		}
		return v.InMsgs
	}
	conv := func() {
		cv, _, err := e.Client.Open(ctx, demo.EchoService, payload)
		if err != nil {
			b.Fatal(err)
		}
		for i := 2; i < msgs; i++ {
			if _, err := cv.Send(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := cv.Send(ctx, []byte("bye")); err != nil {
			b.Fatal(err)
		}
		if cv.Ended() == nil {
			b.Fatal("conversation not ended by the replica")
		}
	}
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		m0, a0, start := inMsgs(), mallocs(), time.Now()
		for i := 0; i < n*msgs; i++ {
			if _, err := raw.Request("bench.raw.echo", payload, 5*time.Second); err != nil {
				b.Fatal(err)
			}
		}
		rawNS += time.Since(start)
		rawAllocs += mallocs() - a0
		rawMsgs += inMsgs() - m0
		rawN += n * msgs
		m0, a0, start = inMsgs(), mallocs(), time.Now()
		for i := 0; i < n; i++ {
			conv()
		}
		musterNS += time.Since(start)
		musterAllocs += mallocs() - a0
		musterMsgs += inMsgs() - m0
		musterN += n * msgs
		done += n
	}
	m, r := float64(musterNS)/float64(musterN), float64(rawNS)/float64(rawN)
	b.ReportMetric(m, "muster-ns/msg")
	b.ReportMetric(r, "raw-ns/msg")
	b.ReportMetric(r/m, "msgs-ratio")
	ma, ra := float64(musterAllocs)/float64(musterN), float64(rawAllocs)/float64(rawN)
	b.ReportMetric(ma, "muster-allocs/msg")
	b.ReportMetric(ra, "raw-allocs/msg")
	// What the NATS server received per message (requests, replies and
	// anything else on the wire meanwhile, heartbeats included).
	b.ReportMetric(float64(musterMsgs)/float64(musterN), "muster-nats-msgs/msg")
	b.ReportMetric(float64(rawMsgs)/float64(rawN), "raw-nats-msgs/msg")
}
