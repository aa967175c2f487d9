package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/worker"
)

// pair is what warm and conv measure: R Muster echo replicas and R raw NATS
// echo responders in one queue group, each on its own connection, and one
// client connection per side.
type pair struct {
	sys      *system
	service  string // Muster's echo
	raw      string // the raw responders' subject
	micro    string // the NATS micro services' endpoint subject
	rawNC    *nats.Conn
	cli      *client.Client
	stop     context.CancelFunc
	done     []chan error
	capacity int // of each replica
}

func startPair(ctx context.Context, cfg Config) (_ *pair, retErr error) {
	sys, err := startSystem(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p := &pair{sys: sys, service: "BENCH/ECHO/" + nuid.Next(), raw: "bench.raw." + nuid.Next(), micro: "bench.micro." + nuid.Next()}
	defer func() {
		if retErr != nil {
			p.close()
		}
	}()
	capacity := cfg.Capacity
	if capacity <= 0 {
		capacity = cfg.Clients // warm: any replica can take every caller
	}
	p.capacity = capacity
	runCtx, stop := context.WithCancel(context.Background())
	p.stop = stop
	for i := 0; i < cfg.Replicas; i++ {
		// The raw baseline holds admin credentials (everything allowed).
		nc, err := sys.connect(fmt.Sprintf("bench raw responder %d", i), auth.RoleAdmin)
		if err != nil {
			return nil, err
		}
		if _, err := nc.QueueSubscribe(p.raw, "raw", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			return nil, err
		}
		if err := nc.Flush(); err != nil {
			return nil, err
		}
		id := nuid.Next()
		// The second baseline, what a user might pick instead of Muster for
		// warm calls: a nats.go micro service with the same handler.
		mnc, err := sys.connect(fmt.Sprintf("bench micro service %d", i), auth.RoleAdmin)
		if err != nil {
			return nil, err
		}
		if _, err := micro.AddService(mnc, micro.Config{Name: "bench-echo", Version: "1.0.0",
			Endpoint: &micro.EndpointConfig{Subject: p.micro, Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })}}); err != nil {
			return nil, err
		}
		if err := mnc.Flush(); err != nil {
			return nil, err
		}
		wnc, err := sys.connectReplica(fmt.Sprintf("bench replica %d", i), id, p.service)
		if err != nil {
			return nil, err
		}
		ready := make(chan struct{})
		done := make(chan error, 1)
		p.done = append(p.done, done)
		go func() {
			h := worker.HandlerFunc(mirror)
			if cfg.LoopHandler {
				h = mirrorLoop
			}
			done <- worker.Run(runCtx, h, worker.WithConn(wnc), worker.WithService(p.service), worker.WithReplicaID(id),
				worker.WithCapacity(capacity), worker.WithSignals(false), worker.WithLogger(cfg.Logger),
				worker.WithReadyFunc(func() { close(ready) }))
		}()
		select {
		case <-ready:
		case err := <-done:
			return nil, fmt.Errorf("replica did not start: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if p.rawNC, err = sys.connect("bench raw client", auth.RoleAdmin); err != nil {
		return nil, err
	}
	cnc, err := sys.connect("bench muster client", auth.RoleClient)
	if err != nil {
		return nil, err
	}
	// Every call has 5 s, as every baseline request has (nc.Request's
	// timeout): the client's default, for calls whose context has no
	// deadline.
	if p.cli, err = client.New(cnc, client.WithTimeout(5*time.Second)); err != nil {
		return nil, err
	}
	return p, nil
}

// mirror is the bench replicas' handler: it answers every message with
// its payload unchanged, as the raw and micro baselines do (demo.Echo
// numbers conversation messages with fmt.Sprintf, work the baselines do
// not do), and a conversation message "bye" ends the conversation. It
// serves with Conv.Steps, the faster of the two handler styles for
// conversations; mirrorLoop (--loop-handler) is the same with a Receive
// and Reply loop.
func mirror(ctx context.Context, c *worker.Conv) error {
	return c.Steps(ctx, func(_ context.Context, m *worker.Message) ([]byte, bool, error) {
		return m.Data, bytes.Equal(m.Data, bye), nil
	})
}

func handlerStyle(cfg Config) string {
	if cfg.LoopHandler {
		return "a Receive/Reply loop (--loop-handler)"
	}
	return "Conv.Steps"
}

func mirrorLoop(ctx context.Context, c *worker.Conv) error {
	for {
		m, err := c.Receive(ctx)
		if err != nil {
			if errors.Is(err, proto.ErrEOC) || errors.Is(err, proto.ErrCancelled) {
				return nil
			}
			return err
		}
		if c.IsCall() {
			return c.Reply(m.Data)
		}
		if bytes.Equal(m.Data, bye) {
			return c.ReplyEnd(m.Data)
		}
		if err := c.Reply(m.Data); err != nil {
			return err
		}
	}
}

var bye = []byte("bye")

func (p *pair) close() {
	if p.stop != nil {
		p.stop()
		for _, d := range p.done {
			<-d
		}
	}
	p.sys.close()
}

// load runs n goroutines calling op until d has passed and returns the
// count and every call's latency.
func load(n int, d time.Duration, op func() error) (int64, []time.Duration, error) {
	var count atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, n)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t := time.Now()
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lats[i] = append(lats[i], time.Since(t))
				count.Add(1)
			}
		}(i)
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, nil, err
	}
	return count.Load(), all, nil
}

// roundsN alternates the systems of ops, a round (250 ms) each, until
// each had d, and returns each one's count, every call's latency and what
// the process spent (CPU, system calls) while each ran. Short rounds, and
// an order that rotates from one round to the next, spread a noisy
// neighbour's bursts and whatever a system leaves behind it (garbage to
// collect, a flusher still writing) evenly over the systems: with 1 s
// rounds in a fixed order the same-run ratio moved by ±0.1 between runs.
func roundsN(d time.Duration, n int, names []string, ops ...func() error) ([]int64, [][]time.Duration, []cost, error) {
	round := min(250*time.Millisecond, d)
	counts := make([]int64, len(ops))
	lats := make([][]time.Duration, len(ops))
	costs := make([]cost, len(ops))
	for r, spent := 0, time.Duration(0); spent < d; r, spent = r+1, spent+round {
		for k := range ops {
			i := (k + r) % len(ops)
			op := ops[i]
			before := costNow()
			c, l, err := load(n, round, op)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%s: %w", names[i], err)
			}
			counts[i], lats[i] = counts[i]+c, append(lats[i], l...)
			costs[i] = costs[i].add(costNow().sub(before))
		}
	}
	return counts, lats, costs, nil
}

// costNote says what each system spent per call (or message), as measured
// over its rounds: the whole process's CPU time and read/write calls.
func costNote(unit string, names []string, counts []int64, per int64, costs []cost) string {
	parts := make([]string, len(names))
	for i, name := range names {
		n := max(counts[i]*per, 1)
		parts[i] = fmt.Sprintf("%s %.1f µs CPU, %.2f syscalls", name, float64(costs[i].cpu.Microseconds())/float64(n), float64(costs[i].syscalls)/float64(n))
	}
	return "cost per " + unit + " (whole process: clients, NATS server, responders): " + strings.Join(parts, "; ")
}

func runWarm(ctx context.Context, cfg Config) (*Result, error) {
	p, err := startPair(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.close()
	payload := []byte("0123456789abcdef0123456789abcdef")
	raw := func() error { _, err := p.rawNC.Request(p.raw, payload, 5*time.Second); return err }
	mic := func() error { _, err := p.rawNC.Request(p.micro, payload, 5*time.Second); return err }
	must := func() error { _, err := p.cli.Call(ctx, p.service, payload); return err } // 5 s: the client's default
	// Warm all up so none pays first-use costs in the measurement.
	for _, op := range []func() error{raw, mic, must} {
		if _, _, err := load(cfg.Clients, 200*time.Millisecond, op); err != nil {
			return nil, err
		}
	}
	counts, lats, costs, err := roundsN(cfg.Duration, cfg.Clients, []string{"baseline", "micro baseline", "muster"}, raw, mic, must)
	if err != nil {
		return nil, err
	}
	bc, mcc, mc := counts[0], counts[1], counts[2]
	bl, mil, ml := lats[0], lats[1], lats[2]
	secs := cfg.Duration.Seconds()
	queued := int64(0)
	for _, s := range p.sys.broker.Stats(ctx) {
		if s.Service == p.service {
			queued = s.TotalRequests
		}
	}
	return &Result{
		Figures: []Figure{
			ratioFigure("throughput", "calls/s", float64(mc)/secs, float64(bc)/secs, 0.8, true),
			ratioFigure("p99 latency", "ms", ms(percentile(ml, 99)), ms(percentile(bl, 99)), 1.5, false),
			{Name: "p50 latency", Unit: "ms", Muster: ms(percentile(ml, 50)), Baseline: ms(percentile(bl, 50)), Ratio: ms(percentile(ml, 50)) / ms(percentile(bl, 50))},
			ratioFigure("throughput vs a NATS micro service", "calls/s", float64(mc)/secs, float64(mcc)/secs, 0.95, true),
			{Name: "p99 latency vs micro", Unit: "ms", Muster: ms(percentile(ml, 99)), Baseline: ms(percentile(mil, 99)), Ratio: ms(percentile(ml, 99)) / ms(percentile(mil, 99))},
		},
		Notes: []string{
			fmt.Sprintf("%d clients, %d replicas (capacity %d each) vs %d raw responders and %d nats.go micro services with the same handler, %v each in 250ms rounds alternating in a rotating order, 32-byte payload",
				cfg.Clients, cfg.Replicas, p.capacity, cfg.Replicas, cfg.Replicas, cfg.Duration),
			fmt.Sprintf("%d of %d Muster calls went through the broker queue (no free replica at that instant)", queued, mc),
			costNote("call", []string{"raw", "micro", "Muster"}, counts, 1, costs),
		},
	}, nil
}

func runConv(ctx context.Context, cfg Config) (*Result, error) {
	p, err := startPair(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.close()
	msgs := int64(cfg.ConvMessages)
	payload := []byte("0123456789abcdef0123456789abcdef")
	raw := func() error {
		for i := int64(0); i < msgs; i++ {
			if _, err := p.rawNC.Request(p.raw, payload, 5*time.Second); err != nil {
				return err
			}
		}
		return nil
	}
	must := func() error {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cv, _, err := p.cli.Open(c, p.service, payload)
		if err != nil {
			return err
		}
		for i := int64(2); i < msgs; i++ {
			if _, err := cv.Send(c, payload); err != nil {
				return err
			}
		}
		if _, err := cv.Send(c, []byte("bye")); err != nil { // the last message; the replica ends it
			return err
		}
		if cv.Ended() == nil {
			return fmt.Errorf("conversation not ended by the replica")
		}
		return nil
	}
	if _, _, err := load(cfg.Clients, 200*time.Millisecond, raw); err != nil {
		return nil, err
	}
	if _, _, err := load(cfg.Clients, 200*time.Millisecond, must); err != nil {
		return nil, err
	}
	counts, _, costs, err := roundsN(cfg.Duration, cfg.Clients, []string{"baseline", "muster"}, raw, must)
	if err != nil {
		return nil, err
	}
	bc, mc := counts[0], counts[1]
	secs := cfg.Duration.Seconds()
	return &Result{
		Figures: []Figure{
			ratioFigure("messages", "msgs/s", float64(mc*msgs)/secs, float64(bc*msgs)/secs, 0.9, true),
		},
		Notes: []string{fmt.Sprintf("%d clients, conversations of %d messages (NEW, %d OLD, a last OLD the replica ends) vs %d raw requests; the replicas serve with %s", cfg.Clients, msgs, msgs-2, msgs, handlerStyle(cfg)),
			costNote("message", []string{"raw", "Muster"}, counts, msgs, costs)},
	}, nil
}
