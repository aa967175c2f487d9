// Package broker is Muster's broker service: it queues requests no replica
// could take (queue.go), sends attach notifications when work waits and no
// replica is free (notify.go), and keeps the ATMCB figures and
// EntireX-style counters per service (stats.go). It mirrors the
// registrations in memory (registry.go) and owns every goroutine and timer
// it starts (routines.go). The wire contract it speaks is in package proto;
// the Go client SDK is package client.
package broker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/placement"
	"github.com/musterhq/muster/internal/streams"
)

// Config configures a broker.
type Config struct {
	// ID names this broker in notifications (default: generated).
	ID string
	// DefaultTimeout is the deadline given to requests that carry none
	// (plain NATS clients that set neither Muster-Deadline nor
	// Muster-Timeout). Default 30s.
	DefaultTimeout time.Duration
	// NotifyDelay gathers the requests of a burst into one notification
	// (default 0: the first request of a burst is notified at once; the
	// rest follow RenotifyInterval later).
	NotifyDelay time.Duration
	// RenotifyInterval is the least time between two notifications for one
	// service while work keeps waiting (default 25ms).
	RenotifyInterval time.Duration
	// Logger receives the broker's logs (default slog.Default()).
	Logger *slog.Logger
	// Version is reported in its stats (default "dev").
	Version string
	// Placement is the scheme of services that have none in the pool and
	// when the pool has no default ("" = placement.Default, p2c).
	Placement placement.Scheme
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		c.ID = nuid.Next()
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 30 * time.Second
	}
	if c.NotifyDelay < 0 {
		c.NotifyDelay = 0
	}
	if c.RenotifyInterval <= 0 {
		c.RenotifyInterval = 25 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Broker is a running broker. Several may run against one NATS system;
// they share the call subjects in a queue group.
//
// Lock order: Broker.mu before registry.mu, and Broker.mu before
// routines.mu (scheduling a notification starts a timer under Broker.mu).
// registry.mu and routines.mu are leaves: neither is held while taking
// another lock.
type Broker struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	queue jetstream.Stream
	log   *slog.Logger

	reg *registry

	mu   sync.Mutex
	svcs map[proto.Service]*svcState // guarded by mu

	subs       []*nats.Subscription
	subsClosed []chan struct{} // closed when the matching sub's handler has returned for the last time
	runCtx     context.Context // done at Shutdown: cancels the work of every routine
	cancel     context.CancelFunc
	routines   *routines
	stopOnce   sync.Once

	started     time.Time
	lease       *lease                   // leadership of notifications (lead.go)
	notifyDelay *prometheus.HistogramVec // queued → notification sent, per service (metrics.go)

	lastQueueErrLog atomic.Int64 // Unix ns of the last log of a queue stream that refuses requests
}

// Start starts a broker on nc (which the caller keeps and closes after
// Shutdown).
func Start(ctx context.Context, nc *nats.Conn, cfg Config) (_ *Broker, retErr error) {
	cfg.setDefaults()
	ctx, cancelStart := context.WithTimeout(ctx, 30*time.Second) // every startup step is bounded
	defer cancelStart()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("broker: jetstream: %w", err)
	}
	q, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, nc: nc, js: js, queue: q, log: cfg.Logger.With("broker", cfg.ID), started: time.Now(),
		svcs: map[proto.Service]*svcState{}, runCtx: runCtx, cancel: cancel, routines: newRoutines(),
		notifyDelay: newNotifyDelay(cfg.ID)}
	b.lease = &lease{b: b, readable: time.Now()}
	defer func() {
		if retErr != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Shutdown(sctx)
		}
	}()
	if b.reg, err = startRegistry(ctx, runCtx, js, b.log, b.routines); err != nil {
		return nil, err
	}
	b.reg.pool.flagScheme = cfg.Placement
	b.reg.followPool(ctx, runCtx, js, b.routines)
	b.lease.start(ctx)
	for _, s := range []struct {
		subj, queue string
		cb          nats.MsgHandler
	}{
		{proto.CallPrefix + ">", proto.BrokerQueue, b.onCall},
		{proto.ForwardPrefix + ">", proto.BrokerQueue, b.onForward},
		{proto.BrokerStatsSubject, "", b.onStats},
		{proto.BrokerStatsSubject + ".>", "", b.onStats},
		{proto.BrokerHintPrefix + ">", "", b.onHint},
	} {
		sub, err := nc.QueueSubscribe(s.subj, s.queue, s.cb)
		if err != nil {
			return nil, fmt.Errorf("broker: subscribe %s: %w", s.subj, err)
		}
		closed := make(chan struct{})
		sub.SetClosedHandler(func(string) { close(closed) })
		b.subs = append(b.subs, sub)
		b.subsClosed = append(b.subsClosed, closed)
	}
	b.routines.start(func() { b.loop(runCtx) })
	b.routines.start(func() { b.lease.run(runCtx) })
	if err := nc.FlushWithContext(ctx); err != nil {
		return nil, fmt.Errorf("broker: flush: %w", err)
	}
	b.log.Info("broker started")
	return b, nil
}

// Shutdown stops the broker. It drains its subscriptions, so requests NATS
// already delivered to it are still queued or answered while new ones go
// to other brokers; then it stops its timers and cancels its work, and
// waits until none of its handlers, goroutines or timers runs any more.
// Queued requests stay in the stream for the next broker and the replicas.
//
// Shutdown is idempotent and safe to call concurrently. If ctx ends first
// it returns ctx's error wrapped; the broker's routines then end soon, as
// their work is cancelled.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.drain(ctx)
		b.routines.close()
		b.cancel()
	})
	if err := b.routines.wait(ctx); err != nil {
		return fmt.Errorf("broker: shutdown: %w", err)
	}
	return nil
}

// drain drains the subscriptions and waits, up to ctx, until each handler
// has returned for the last time; when ctx ends first it unsubscribes, so
// NATS delivers nothing more.
func (b *Broker) drain(ctx context.Context) {
	for _, s := range b.subs {
		_ = s.Drain() // fails only when the subscription or connection is already closed
	}
	for _, closed := range b.subsClosed {
		select {
		case <-closed:
		case <-ctx.Done():
			for _, s := range b.subs {
				_ = s.Unsubscribe()
			}
			return
		}
	}
}

// ID returns the broker's id.
func (b *Broker) ID() string { return b.cfg.ID }

// loop is the broker's periodic work: once a second it deletes the
// registrations of replicas whose heartbeats stopped and looks again at
// every service whose work still waits.
func (b *Broker) loop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.reg.sweep(ctx, time.Now())
		if b.Leading() {
			b.recheckWaiting(ctx)
		}
	}
}
