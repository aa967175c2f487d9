package worker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
)

// Replica states (internal).
const (
	stateReady = iota
	stateQuiescing
	stateStandby // parked on the standby subject (standby.go)
)

// Limits and bounds of one replica. Every wait of the replica has one.
const (
	// progressDelay is how long a replica holds a request before it tells
	// the client so (StatusWorking).
	progressDelay = 200 * time.Millisecond
	// pullExpires is how long one pull request for queued work stays open
	// at the server.
	pullExpires = 30 * time.Second
	// maxTombs is how many ended conversations a replica remembers.
	maxTombs = 1024
	// warmBuffer is how many warm requests wait for the workers (beyond:
	// NATS slow consumer).
	warmBuffer = 1 << 16
	// startTimeout bounds every step of start.
	startTimeout = 30 * time.Second
	// forwardTimeout is how long a forward waits for a broker's
	// acknowledgement: longer than the broker's own 5s JetStream publish
	// timeout, so a slow but successful queueing is not reported as a
	// failure.
	forwardTimeout = 10 * time.Second
	// handlerStopWait is how long handlers get to return once their
	// contexts are cancelled (IMMED, end of grace).
	handlerStopWait = 5 * time.Second
	// drainWait bounds the wait for the client library to finish the
	// subscriptions' callbacks at shutdown.
	drainWait = 5 * time.Second
	// deregisterTimeout bounds the final registration delete and flush.
	deregisterTimeout = 2 * time.Second
	// offlineWait is how long shutdown waits for its helper goroutines
	// when the connection is down: they stop with the base context, except
	// forwards, which wait for a broker that cannot answer now.
	offlineWait = 250 * time.Millisecond
)

// counters are a replica's statistics (atomics: read by the heartbeat and
// discovery while handlers run).
type counters struct {
	convs, msgs, errors, bytesIn, bytesOut, procNS, queued atomic.Int64
	lastError                                              atomic.Value // string
}

// replica is one running replica: its subscriptions, slots, open
// conversations, workers and registration. The code is split by concept:
// this file starts and stops it; slots.go takes and frees slots; pool.go
// runs the workers; warm.go is the warm subscription and the forwarding of
// what the replica cannot take; pull.go takes queued requests; control.go
// answers the private and control subjects; register.go keeps the
// registration; idle.go is the idle timeout; progress.go the tick for
// "working" statuses and conversation timeouts.
//
// Lock order: replica.mu before Conv.mu. A conversation never takes
// replica.mu while it holds its own lock (replyError and ack take none).
//
// Goroutines: every goroutine the replica starts belongs to one of its
// groups (pool: the workers and the forwarder, which stop with baseCtx;
// helpers: the heartbeat, forwards and idle checks, each bounded), and
// shutdown waits for them, bounded. Conversations accepted but not yet
// finished by a worker are counted in serving.
type replica struct {
	cfg      *config
	h        Handler
	nc       *nats.Conn
	kv       jetstream.KeyValue // the registration bucket for reads, bound when first read (bucket); guarded by mu
	pullSubj string             // $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
	js       jetstream.JetStream
	started  time.Time
	stats    counters
	// maxPayload is the server's limit, refreshed at every heartbeat rather
	// than read per reply (nc.MaxPayload takes the connection's lock).
	maxPayload atomic.Int64
	lastWrite  atomic.Int64 // UnixNano of the last registration write
	// lastMsgs and lastActive (Unix ms) track when messages last came,
	// to within a record write; guarded by mu.
	lastMsgs, lastActive int64
	dirty                atomic.Bool // a conversation ended since that write

	// baseCtx is cancelled at IMMED (or the end of the grace): handlers'
	// contexts derive from it, and the workers, the forwarder and the
	// heartbeat stop with it.
	baseCtx    context.Context
	baseCancel context.CancelFunc

	mu     sync.Mutex
	state  int
	active int              // slots taken
	convs  map[string]*Conv // conversations by id
	// byNotify holds the open conversations whose OLDs may come bare,
	// by their Muster-Notify subject (the bare OLD's reply subject).
	byNotify    map[string]*Conv
	calls       map[uint64]*Conv // calls by number (callSeq): no id string per call
	tombs       map[string]*proto.Error
	tombOrder   []tomb
	warm        *nats.Subscription
	drainedWarm *nats.Subscription // the warm subscription last left, maybe still draining
	warmNew     *nats.Subscription // bare NEWs (proto.NewSubject), subscribed and left with warm
	drainedNew  *nats.Subscription // the bare-NEW subscription last left
	newSubject  string             // proto.NewSubject of the service, built once
	noBareNew   atomic.Bool        // the server refused the bare-NEW subscription (watchRefusals)
	subs        []*nats.Subscription
	pullInbox   string
	pulling     bool                     // a pull request is open at the server
	lostCons    bool                     // the server said the consumer is gone: recreate it
	pullSign    time.Time                // when the open pull was sent or last showed life (idle heartbeat)
	pullBackoff time.Duration            // wait before the next pull after refusals in a row (0: none)
	pullAfter   time.Time                // no pull before this (a retry is due then)
	backlog     bool                     // queued requests wait: take them before rejoining the warm path (pull.go)
	pullNoWait  bool                     // the open pull is a no_wait one (backlog)
	pullGen     uint64                   // the number of the last pull sent: its reply subject is pullInbox.<pullGen in base 36>
	ackHook     func(ackTo string) error // tests: stands in for ackSync
	idle        *time.Timer
	exitReason  string
	immedWanted bool
	serving     group // conversations accepted and not yet finished by a worker
	pool        group // worker and forwarder goroutines
	helpers     group // heartbeat, forward and idle-check goroutines

	// For FIND (control.go) and keepalives (progress.go).
	forwarding map[string]int // guarded by mu: reply subjects of warm requests being handed to the broker
	offline    bool           // the connection was down at the last progress tick (used by it only)

	stallState
	privateState
	callSeq       uint64               // the last call's number (its key in calls); guarded by mu
	standbySub    *nats.Subscription   // the standby subject while parked; guarded by mu
	armedWarm     *nats.Subscription   // an armed standby's warm subscription (standby.go); guarded by mu
	armedNew      *nats.Subscription   // and its bare-NEW one
	standbyDrains []*nats.Subscription // the standby's subscriptions left (drains), for closeSubscriptions
	parked        atomic.Bool          // in the standby state (read on the warm path without the lock)
	activatedWhy  string               // what activated a standby; written before activated is closed
	joinPending   bool                 // activated by a request that is being served: no warm path or pull until join; guarded by mu
	activated     chan struct{}        // closed when a standby becomes a serving replica (or at once for others)
	work          chan *Conv           // hands queued conversations to idle workers
	warmCh        chan *nats.Msg       // the warm subscription delivers here; the dispatcher reads it
	fullSig       chan struct{}        // wakes the forwarder when the replica fills up
	stop          chan struct{}        // closed when the replica starts to quiesce
	hbKick        chan struct{}        // asks the heartbeat loop to write now
	// tickKick restarts the parked progress tick; tickParked says it is
	// parked (register.go).
	tickKick   chan struct{}
	tickParked atomic.Bool
}

// mono returns t on the replica's monotonic clock: nanoseconds since it
// was created, measured without the wall clock (Conv.heard).
func (r *replica) mono(t time.Time) int64 { return int64(t.Sub(r.started)) }

func newReplica(cfg *config, h Handler, nc *nats.Conn) *replica {
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{
		cfg: cfg, h: h, nc: nc, started: time.Now(),
		baseCtx: ctx, baseCancel: cancel,
		convs: map[string]*Conv{}, byNotify: map[string]*Conv{}, calls: map[uint64]*Conv{}, tombs: map[string]*proto.Error{}, forwarding: map[string]int{},
		work: make(chan *Conv), warmCh: make(chan *nats.Msg, warmBuffer), fullSig: make(chan struct{}, 1),
		stop: make(chan struct{}), hbKick: make(chan struct{}, 1), tickKick: make(chan struct{}, 1),
		activated: make(chan struct{}), newSubject: proto.NewSubject(cfg.service),
	}
	if !cfg.standby {
		close(r.activated)
	}
	r.stall = time.AfterFunc(time.Hour, r.onStall)
	r.stall.Stop()
	r.privCh, r.privStop = make(chan *nats.Msg, privBuffer), make(chan struct{})
	r.privStall = time.AfterFunc(time.Hour, r.onPrivateStall)
	r.privStall.Stop()
	return r
}

// start opens the replica's subscriptions (private, control, pull inbox,
// discovery, then the warm path), flushes them to the server, writes the
// registration (registered means reachable), and only then starts the
// workers, the heartbeat, the first pull and the idle timer. If any step
// fails, nothing of the replica is left: see abandon.
func (r *replica) start(ctx context.Context) (retErr error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	defer func() {
		if retErr != nil {
			r.abandon()
		}
	}()
	var err error
	if r.js, err = jetstream.New(r.nc); err != nil {
		return fmt.Errorf("worker: jetstream: %w", err)
	}
	// A replica finds the assets (creating the missing ones) but leaves
	// their settings to the brokers and attach managers: its queue
	// consumer is one look-up while it exists; the registration bucket
	// none (register.go).
	r.maxPayload.Store(r.nc.MaxPayload())
	if err := r.assets().EnsureQueueConsumer(ctx, r.js, r.cfg.service); err != nil {
		return err
	}
	r.pullSubj = "$JS.API.CONSUMER.MSG.NEXT." + proto.QueueStream + "." + proto.ConsumerName(r.cfg.service)
	r.pullInbox = r.nc.NewInbox() // not under the request mux prefix: pulled messages must not reach it; each pull answers to pullInbox.<n> (pull.go)
	subjects := map[string]nats.MsgHandler{
		proto.ControlSubject(r.cfg.replicaID): r.onControl,
		proto.HeldSubject(r.cfg.service):      r.onHeld,
		r.pullInbox + ".*":                    r.onPulled,
		leaderElectedPrefix + proto.QueueStream + "." + proto.ConsumerName(r.cfg.service): r.onLeaderElected,
	}
	for _, subject := range discoverySubjects(r.discoveryName(), r.cfg.replicaID) {
		subjects[subject] = r.onDiscovery
	}
	priv, err := r.nc.ChanSubscribe(proto.ReplicaSubject(r.cfg.replicaID), r.privCh) // read by privateReader
	if err != nil {
		return fmt.Errorf("worker: subscribe %s: %w", proto.ReplicaSubject(r.cfg.replicaID), err)
	}
	r.mu.Lock()
	r.subs = append(r.subs, priv)
	r.mu.Unlock()
	for subject, cb := range subjects {
		s, err := r.nc.Subscribe(subject, cb)
		if err != nil {
			return fmt.Errorf("worker: subscribe %s: %w", subject, err)
		}
		r.mu.Lock()
		r.subs = append(r.subs, s)
		r.mu.Unlock()
	}
	r.mu.Lock()
	if r.cfg.standby {
		err = r.parkLocked()
	} else {
		err = r.subscribeWarmLocked()
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	// Registered means reachable: the server has the subscriptions first,
	// as it reads what a connection sends in order, and the registration
	// (a request on the same connection) follows them: no flush needed.
	// Nothing is served before the registration is written (warm requests
	// wait in the buffer), so an attach manager never sees a replica that
	// served work as one that failed to start.
	if err := r.register(ctx); err != nil {
		return err
	}
	for i := 0; i < r.cfg.capacity; i++ {
		r.goOwned(&r.pool, r.worker)
	}
	r.goOwned(&r.pool, r.forwarder)
	r.goOwned(&r.pool, r.dispatcher)
	r.goOwned(&r.pool, r.privateReader)
	r.goOwned(&r.helpers, r.heartbeat)
	connected := r.nc.StatusChanged(nats.CONNECTED)
	r.goOwned(&r.helpers, func() { r.watchConn(connected) })
	r.mu.Lock()
	r.pullLocked()
	r.armIdleLocked()
	r.mu.Unlock()
	return nil
}

// assets is how a replica finds the JetStream assets: it creates the
// missing ones but never changes an existing one.
func (r *replica) assets() streams.Config {
	return streams.Config{FindOnly: true, Logger: r.cfg.logger}
}

// abandon undoes a start that failed. Nothing was served: no grace, no
// registration to remove. Warm requests that arrived meanwhile go to the
// broker, so their callers do not notice.
func (r *replica) abandon() {
	r.mu.Lock()
	r.stopLocked("start failed")
	r.mu.Unlock()
	r.baseCancel()
	r.closeSubscriptions()
	r.stopPrivate()
	r.forwardBuffered()
	r.waitPool(true)
	r.waitHelpers()
}

// quiesce stops taking new conversations (DEREGISTER QUIESCE); open ones
// go on. It is idempotent; the first reason is kept.
func (r *replica) quiesce(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.quiesceLocked(reason)
}

func (r *replica) quiesceLocked(reason string) {
	if !r.stopLocked(reason) {
		return
	}
	r.cfg.logger.Info("quiescing", "reason", reason, "open", r.active)
	select { // publish the quiescing state at once, not at the next heartbeat
	case r.hbKick <- struct{}{}:
	default:
	}
}

// stopLocked leaves the ready state: no warm path, no idle timer, no new
// pulls, and Run learns of it. It reports whether the replica was ready.
func (r *replica) stopLocked(reason string) bool {
	if r.state != stateReady && r.state != stateStandby {
		return false
	}
	r.state = stateQuiescing
	r.exitReason = reason
	r.unsubscribeWarmLocked()
	r.unparkLocked()
	if r.idle != nil {
		r.idle.Stop()
	}
	close(r.stop)
	return true
}

// shutdown waits up to grace for open conversations, ends the rest
// (IMMED: clients get 0003/0010), stops the replica's goroutines, forwards
// warm requests still buffered, deregisters, and flushes. Every step is
// bounded. While the connection is down it waits for nothing that needs
// the server (drains, forwards, the deregistration, the flush): an idle
// replica without NATS exits at once, a busy one after its handlers, and
// its record expires by its heartbeat.
func (r *replica) shutdown(grace time.Duration) {
	r.quiesce("shutdown")
	r.mu.Lock()
	if r.immedWanted {
		grace = 0
	}
	r.mu.Unlock()
	handlersDone := r.wait(&r.serving, grace)
	if !handlersDone {
		r.mu.Lock()
		open := make([]*Conv, 0, len(r.convs)+len(r.calls))
		r.eachLocked(func(c *Conv) bool { open = append(open, c); return true })
		r.mu.Unlock()
		r.cfg.logger.Info("ending open conversations", "open", len(open))
		for _, c := range open {
			c.abort(proto.ErrDeregistered)
		}
		r.baseCancel()
		if handlersDone = r.wait(&r.serving, handlerStopWait); !handlersDone {
			r.cfg.logger.Warn("handlers did not return after IMMED; exiting anyway")
		}
	}
	r.baseCancel() // workers, forwarder, heartbeat and waiting hand-overs stop
	r.closeSubscriptions()
	r.stopPrivate()
	r.waitPool(handlersDone)
	r.forwardBuffered()
	r.waitHelpers()
	if !r.nc.IsConnected() {
		r.cfg.logger.Warn("NATS unreachable: exiting without deregistering; the registration expires by its heartbeat")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
	defer cancel()
	if err := r.deregister(ctx); err != nil {
		r.cfg.logger.Warn("deregister failed", "err", err)
	}
	_ = r.nc.FlushWithContext(ctx)
}

// closeSubscriptions drains every subscription of the replica, so messages
// in flight still get an answer (a NAK, an error, a forward), and waits
// until the client library has closed them: no callback of the replica
// runs after it. The wait is bounded by drainWait. While the connection is
// down a drain cannot complete (and no answer can leave): it unsubscribes
// instead.
func (r *replica) closeSubscriptions() {
	r.mu.Lock()
	r.unsubscribeWarmLocked()
	subs := r.subs
	for _, d := range append([]*nats.Subscription{r.drainedWarm, r.drainedNew}, r.standbyDrains...) {
		if d != nil {
			subs = append(subs, d)
		}
	}
	r.subs, r.drainedWarm, r.drainedNew, r.standbyDrains = nil, nil, nil, nil
	r.mu.Unlock()
	closed := make([]<-chan nats.SubStatus, 0, len(subs))
	// The connection may drop while the drains run (a server going down
	// just before SIGTERM): then they cannot complete, so stop waiting.
	lost := r.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer r.nc.RemoveStatusListener(lost)
	offline := !r.nc.IsConnected()
	for _, s := range subs {
		if offline {
			_ = s.Unsubscribe()
			continue
		}
		ch := s.StatusChanged(nats.SubscriptionClosed) // closed when the drain completes
		if err := s.Drain(); err != nil && !s.IsValid() {
			continue // already closed, or the connection is
		}
		closed = append(closed, ch)
	}
	t := time.NewTimer(drainWait)
	defer t.Stop()
	for _, ch := range closed {
		select {
		case <-ch:
		case <-lost:
			r.cfg.logger.Warn("NATS connection lost while draining; exiting without the drain")
			return
		case <-t.C:
			r.cfg.logger.Warn("subscriptions still draining; exiting anyway")
			return
		}
	}
}

// waitPool waits for the workers and the forwarder to stop. A worker whose
// handler did not return is not waited for: it stops when the handler
// returns.
func (r *replica) waitPool(handlersDone bool) {
	if handlersDone && !r.wait(&r.pool, handlerStopWait) {
		r.cfg.logger.Warn("workers did not stop; exiting anyway")
	}
}

// waitHelpers waits for the heartbeat, idle checks and forwards (each
// bounded, a forward by forwardTimeout; only offlineWait while the
// connection is down).
func (r *replica) waitHelpers() {
	d := forwardTimeout + time.Second
	if !r.nc.IsConnected() {
		d = offlineWait
	}
	if !r.wait(&r.helpers, d) {
		r.cfg.logger.Warn("forwards still waiting for a broker; exiting anyway")
	}
}
