package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
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
)

// How long a replica waits before telling a client that it holds its
// request (StatusWorking), and how long one pull request for queued work
// stays open at the server.
const (
	progressDelay = 200 * time.Millisecond
	pullExpires   = 30 * time.Second
	maxTombs      = 1024
	warmBuffer    = 1 << 16 // warm requests buffered for the workers (beyond: NATS slow consumer)
)

// counters are a replica's statistics (atomics: read by the heartbeat and
// discovery while handlers run).
type counters struct {
	convs, msgs, errors, bytesIn, bytesOut, procNS, queued atomic.Int64
	lastError                                              atomic.Value // string
}

// replica is one running replica: its subscriptions, open conversations and
// registration. Lock order: replica.mu before Conv.mu.
type replica struct {
	cfg      *config
	h        Handler
	nc       *nats.Conn
	kv       jetstream.KeyValue
	pullSubj string // $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
	stream   jetstream.Stream
	started  time.Time
	stats    counters
	// maxPayload is the server's limit, refreshed at every heartbeat rather
	// than read per reply (nc.MaxPayload takes the connection's lock).
	maxPayload atomic.Int64
	lastWrite  atomic.Int64 // UnixNano of the last registration write
	dirty      atomic.Bool  // a conversation ended since that write

	baseCtx    context.Context // cancelled at IMMED: handlers' contexts derive from it
	baseCancel context.CancelFunc

	mu          sync.Mutex
	state       int
	active      int
	convs       map[string]*Conv
	tombs       map[string]*proto.Error
	tombOrder   []string
	warm        *nats.Subscription
	subs        []*nats.Subscription
	pullInbox   string
	pulling     bool      // a pull request is open at the server
	lostCons    bool      // the server said the consumer is gone: recreate it
	pullSent    time.Time // when it was sent
	idle        *time.Timer
	exitReason  string
	immedWanted bool
	seq         uint64 // conversation ids: unique within this replica, which is all they need

	work     chan *Conv     // hands queued conversations to idle workers
	warmCh   chan *nats.Msg // the warm subscription delivers here; workers read it
	fullSig  chan struct{}  // wakes the forwarder when the replica fills up
	stop     chan struct{}  // closed when the replica starts to quiesce
	hbKick   chan struct{}  // asks the heartbeat loop to write now
	hbDone   chan struct{}  // closed to stop the heartbeat loop
	hbExited chan struct{}
	wg       sync.WaitGroup // one per conversation goroutine
}

func newReplica(cfg *config, h Handler, nc *nats.Conn) *replica {
	ctx, cancel := context.WithCancel(context.Background())
	return &replica{
		cfg: cfg, h: h, nc: nc, started: time.Now(),
		baseCtx: ctx, baseCancel: cancel,
		convs: map[string]*Conv{}, tombs: map[string]*proto.Error{},
		work: make(chan *Conv), warmCh: make(chan *nats.Msg, warmBuffer), fullSig: make(chan struct{}, 1), stop: make(chan struct{}), hbKick: make(chan struct{}, 1), hbDone: make(chan struct{}), hbExited: make(chan struct{}),
	}
}

// start opens the replica's subscriptions (private, control, pull inbox,
// discovery, then the warm path and the first pull), flushes them to the
// server, writes the registration (registered means reachable), and only
// then starts the workers that serve.
func (r *replica) start(ctx context.Context) (retErr error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // every startup step is bounded
	defer cancel()
	defer func() {
		if retErr != nil {
			r.unsubscribeAll()
		}
	}()
	js, err := jetstream.New(r.nc)
	if err != nil {
		return fmt.Errorf("worker: jetstream: %w", err)
	}
	stream, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		return err
	}
	r.stream = stream
	r.maxPayload.Store(r.nc.MaxPayload())
	cons, err := streams.QueueConsumer(ctx, stream, r.cfg.service)
	if err != nil {
		return err
	}
	r.pullSubj = "$JS.API.CONSUMER.MSG.NEXT." + proto.QueueStream + "." + cons.CachedInfo().Name
	if r.kv, err = streams.EnsureBucket(ctx, js, proto.ReplicaBucket); err != nil {
		return err
	}
	sub := func(subject string, cb nats.MsgHandler) error {
		s, err := r.nc.Subscribe(subject, cb)
		if err != nil {
			return fmt.Errorf("worker: subscribe %s: %w", subject, err)
		}
		r.subs = append(r.subs, s)
		return nil
	}
	if err := sub(proto.ReplicaSubject(r.cfg.replicaID), r.onPrivate); err != nil {
		return err
	}
	if err := sub(proto.ControlSubject(r.cfg.replicaID), r.onControl); err != nil {
		return err
	}
	r.pullInbox = r.nc.NewInbox() // not under the request mux prefix: pulled messages must not reach it
	if err := sub(r.pullInbox, r.onPulled); err != nil {
		return err
	}
	for _, subject := range discoverySubjects(r.discoveryName(), r.cfg.replicaID) {
		if err := sub(subject, r.onDiscovery); err != nil {
			return err
		}
	}
	r.mu.Lock()
	err = r.subscribeWarmLocked()
	if err == nil {
		r.pullLocked()
		r.armIdleLocked()
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	// Registered means reachable: the server has the subscriptions first.
	// Nothing is served before the registration is written (requests wait
	// in the warm buffer, pulled ones for a worker), so an attach manager
	// never sees a replica that served work as one that failed to start.
	if err := r.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("worker: flush: %w", err)
	}
	if err := r.register(ctx); err != nil {
		return err
	}
	for i := 0; i < r.cfg.capacity; i++ {
		go r.worker()
	}
	go r.forwarder()
	go r.heartbeat()
	return nil
}

// register writes the registration record.
func (r *replica) register(ctx context.Context) error {
	r.lastWrite.Store(time.Now().UnixNano())
	r.dirty.Store(false)
	b, _ := json.Marshal(r.info())
	if _, err := r.kv.Put(ctx, r.cfg.replicaID, b); err != nil {
		return fmt.Errorf("worker: register %s: %w", r.cfg.replicaID, err)
	}
	return nil
}

func (r *replica) info() proto.ReplicaInfo {
	host, _ := os.Hostname()
	r.mu.Lock()
	state, active := proto.StateReady, r.active
	if r.state != stateReady {
		state = proto.StateQuiescing
	}
	r.mu.Unlock()
	return proto.ReplicaInfo{
		ID: r.cfg.replicaID, Service: r.cfg.service.String(), Host: host, PID: os.Getpid(),
		Version: r.cfg.version, State: state, Capacity: r.cfg.capacity, Active: active,
		Started: r.started.UnixMilli(), HeartbeatMS: r.cfg.heartbeat.Milliseconds(),
		Updated: time.Now().UnixMilli(),
		Stats: proto.Stats{
			Conversations: r.stats.convs.Load(), Messages: r.stats.msgs.Load(), Errors: r.stats.errors.Load(),
			BytesIn: r.stats.bytesIn.Load(), BytesOut: r.stats.bytesOut.Load(),
			ProcessingNS: r.stats.procNS.Load(), Queued: r.stats.queued.Load(),
		},
	}
}

// heartbeat rewrites the registration and re-opens a pull request the
// server may have lost.
func (r *replica) heartbeat() {
	defer close(r.hbExited)
	t := time.NewTicker(r.cfg.heartbeat)
	defer t.Stop()
	tick := time.NewTicker(progressDelay / 2)
	defer tick.Stop()
	for {
		select {
		case <-r.hbDone:
			return
		case <-tick.C:
			r.progressTick()
			if !r.dirty.Load() || time.Since(time.Unix(0, r.lastWrite.Load())) < freshRecord {
				continue
			}
		case <-r.hbKick:
		case <-t.C:
		}
		r.maxPayload.Store(r.nc.MaxPayload())
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.heartbeat)
		if err := r.register(ctx); err != nil {
			r.cfg.logger.Warn("heartbeat failed", "err", err)
		}
		cancel()
		r.mu.Lock()
		lost := r.lostCons
		r.mu.Unlock()
		if lost {
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.heartbeat)
			if _, err := streams.QueueConsumer(ctx, r.stream, r.cfg.service); err != nil {
				r.cfg.logger.Warn("cannot recreate the queue consumer", "err", err)
			} else {
				r.mu.Lock()
				r.lostCons = false
				r.mu.Unlock()
			}
			cancel()
		}
		r.mu.Lock()
		if r.pulling && time.Since(r.pullSent) > pullExpires+5*time.Second {
			r.pulling = false
		}
		r.pullLocked()
		r.mu.Unlock()
	}
}

// progressTick sends "working" to callers whose request this replica has
// held longer than progressDelay, and ends conversations whose client has
// been silent for convTimeout: one ticker for all, not timers per message.
func (r *replica) progressTick() {
	now := time.Now()
	var slow, idle []*Conv
	r.mu.Lock()
	for _, c := range r.convs {
		if c.progress && now.Sub(c.started) >= progressDelay { // sendWorking skips those already told
			slow = append(slow, c)
		}
		if !c.call {
			c.mu.Lock()
			if !c.waitSince.IsZero() && now.Sub(c.waitSince) >= r.cfg.convTimeout {
				idle = append(idle, c)
			}
			c.mu.Unlock()
		}
	}
	r.mu.Unlock()
	for _, c := range slow {
		c.sendWorking()
	}
	for _, c := range idle {
		c.timeOut()
	}
}

func (r *replica) subscribeWarmLocked() error {
	if r.warm != nil || r.state != stateReady || r.active >= r.cfg.capacity {
		return nil
	}
	s, err := r.nc.ChanQueueSubscribe(proto.WarmSubject(r.cfg.service), proto.WarmQueue, r.warmCh)
	if err != nil {
		return fmt.Errorf("worker: subscribe warm path: %w", err)
	}
	r.warm = s
	return nil
}

// unsubscribeWarmLocked leaves the warm path. It drains rather than
// unsubscribes: requests the server sent before it saw the UNSUB still
// reach onWarm (which forwards them to the broker) instead of being
// dropped by the client library.
func (r *replica) unsubscribeWarmLocked() {
	if r.warm != nil {
		_ = r.warm.Drain()
		r.warm = nil
	}
}

// pullLocked opens a pull request for one queued request when the replica
// has a free slot and none is open.
func (r *replica) pullLocked() {
	if r.pulling || r.state != stateReady || r.active >= r.cfg.capacity || r.pullSubj == "" {
		return
	}
	body := fmt.Sprintf(`{"batch":1,"expires":%d}`, pullExpires.Nanoseconds())
	if err := r.nc.PublishRequest(r.pullSubj, r.pullInbox, []byte(body)); err != nil {
		r.cfg.logger.Warn("pull request failed", "err", err)
		return
	}
	r.pulling, r.pullSent = true, time.Now()
}

// armIdleLocked (re)starts the idle timer when no conversation is open.
func (r *replica) armIdleLocked() {
	if r.cfg.idleTimeout <= 0 || r.active > 0 || r.state != stateReady {
		return
	}
	if r.idle == nil {
		r.idle = time.AfterFunc(r.cfg.idleTimeout, r.onIdle)
	} else {
		r.idle.Reset(r.cfg.idleTimeout)
	}
}

// onIdle runs when the idle timeout passes with no conversation: exit,
// unless this replica is one of the min longest-running of its service.
func (r *replica) onIdle() {
	if r.cfg.minReplicas > 0 && r.amongOldest(r.cfg.minReplicas) {
		r.mu.Lock()
		r.armIdleLocked()
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	idle := r.active == 0 && r.state == stateReady
	r.mu.Unlock()
	if idle {
		r.quiesce("idle timeout")
	}
}

// amongOldest reports whether this replica is one of the n oldest live,
// ready replicas of its service. Every replica sorts the same records the
// same way, so exactly the n oldest stay.
func (r *replica) amongOldest(n int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lister, err := r.kv.ListKeys(ctx)
	if err != nil {
		return true // cannot tell: stay, the safe side of a minimum
	}
	var live []proto.ReplicaInfo
	now := time.Now()
	for k := range lister.Keys() {
		e, err := r.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		ri, err := proto.DecodeReplicaInfo(e.Value())
		if err != nil || ri.Service != r.cfg.service.String() || ri.State != proto.StateReady || ri.Expired(now) {
			continue
		}
		live = append(live, ri)
	}
	sort.Slice(live, func(i, j int) bool {
		if live[i].Started != live[j].Started {
			return live[i].Started < live[j].Started
		}
		return live[i].ID < live[j].ID
	})
	for i := 0; i < len(live) && i < n; i++ {
		if live[i].ID == r.cfg.replicaID {
			return true
		}
	}
	return false
}

// quiesce stops taking new conversations (DEREGISTER QUIESCE); open ones
// go on. It is idempotent; the first reason is kept.
func (r *replica) quiesce(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != stateReady {
		return
	}
	r.state = stateQuiescing
	r.exitReason = reason
	r.unsubscribeWarmLocked()
	if r.idle != nil {
		r.idle.Stop()
	}
	close(r.stop)
	r.cfg.logger.Info("quiescing", "reason", reason, "open", r.active)
	select { // publish the quiescing state at once, not at the next heartbeat
	case r.hbKick <- struct{}{}:
	default:
	}
}

// accept takes a call or NEW conversation if a slot is free and returns
// it for the caller to serve. handled is true when the request was answered
// here instead (malformed, expired); both are zero when the replica is full
// or quiescing, and the caller forwards or NAKs the request.
//
// For a queued request, ackTo is the JetStream ack subject: the request is
// ACKed once its slot is reserved, before the handler can reply.
func (r *replica) accept(nm *nats.Msg, replyTo, ackTo string) (c *Conv, handled bool) {
	queued := ackTo != ""
	op, err := proto.ParseOp(nm.Header)
	if err == nil && op != proto.OpCall && op != proto.OpNew {
		err = fmt.Errorf("%w: %s %s belongs on the replica subject", proto.ErrBadHeader, proto.HdrOp, op)
	}
	m, err2 := r.message(nm)
	if err == nil {
		err = err2
	}
	if err != nil {
		r.replyError(replyTo, proto.Errorf(proto.CodeBadRequest, "%v", err))
		r.term(ackTo)
		return nil, true
	}
	if !m.Deadline.IsZero() && time.Now().After(m.Deadline) {
		r.replyError(replyTo, proto.Errorf(proto.CodeWaitTimeout, "deadline passed before a replica took the request"))
		r.term(ackTo)
		return nil, true
	}
	r.mu.Lock()
	if r.state != stateReady || r.active >= r.cfg.capacity {
		r.mu.Unlock()
		return nil, false
	}
	r.active++
	if r.idle != nil {
		r.idle.Stop()
	}
	if r.active >= r.cfg.capacity {
		r.unsubscribeWarmLocked()
		select { // requests still in flight go to the forwarder
		case r.fullSig <- struct{}{}:
		default:
		}
	}
	// A call's handler runs under the replica's own context (cancelled at
	// IMMED): a context per call costs the warm path a registration in the
	// parent's child set. The caller's deadline is in Message.Deadline.
	ctx, cancel := r.baseCtx, context.CancelFunc(noop)
	if op != proto.OpCall {
		ctx, cancel = context.WithCancel(r.baseCtx) // CANCEL aborts one conversation
	}
	r.seq++
	c = &Conv{
		r: r, id: strconv.FormatUint(r.seq, 36), call: op == proto.OpCall,
		notify: nm.Header.Get(proto.HdrNotify), progress: nm.Header.Get(proto.HdrProgress) == "1",
		ctx: ctx, cancel: cancel, first: m, firstTo: replyTo, started: time.Now(),
	}
	if !c.call {
		c.in, c.idleOut = make(chan *nats.Msg, 1), make(chan struct{})
	}
	r.convs[c.id] = c // calls too, so IMMED can answer them
	r.wg.Add(1)
	r.mu.Unlock()

	r.stats.convs.Add(1)
	if queued {
		_ = r.nc.Publish(ackTo, []byte("+ACK"))
		r.stats.queued.Add(1)
		c.sendWorking()
	}
	return c, true
}

// worker is one of the replica's capacity handler goroutines. It takes
// warm requests straight from the subscription's channel and serves them
// inline (no hand-over between goroutines on the warm path), and serves the
// conversations onPulled accepted from the queue.
func (r *replica) worker() {
	for {
		select {
		case nm := <-r.warmCh:
			r.onWarm(nm)
		case c := <-r.work:
			r.serve(c)
		case <-r.baseCtx.Done():
			return
		}
	}
}

// forwarder takes warm requests while every worker is busy (they reached
// the replica before it left the warm path) and forwards them to the broker.
func (r *replica) forwarder() {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.fullSig:
		case <-r.baseCtx.Done():
			return
		}
		for r.isFull() {
			select {
			case nm := <-r.warmCh:
				c, handled := r.accept(nm, nm.Reply, "")
				switch {
				case c != nil:
					r.work <- c // a slot freed meanwhile: a worker takes it
				case !handled:
					r.forward(nm)
				}
			case <-tick.C:
			case <-r.baseCtx.Done():
				return
			}
		}
	}
}

func (r *replica) isFull() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active >= r.cfg.capacity || r.state != stateReady
}

// term removes a queued request that will never be served.
func (r *replica) term(ackTo string) {
	if ackTo != "" {
		_ = r.nc.Publish(ackTo, []byte("+TERM"))
	}
}

// serve runs the handler for one conversation and frees its slot.
func (r *replica) serve(c *Conv) {
	defer r.wg.Done()
	start := time.Now()
	err := safeServe(r.h, c)
	r.stats.procNS.Add(int64(time.Since(start)))
	if err != nil {
		r.stats.errors.Add(1)
		r.stats.lastError.Store(err.Error())
	}
	c.finish(err)
	c.cancel()
	r.release(c)
}

func safeServe(h Handler, c *Conv) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = proto.Errorf(proto.CodeServiceError, "handler panicked: %v", p)
		}
	}()
	return h.Serve(c.ctx, c)
}

// release frees a finished conversation's slot and reopens the warm path.
func (r *replica) release(c *Conv) {
	reason := c.endReason()
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.released {
		return // already freed when its last reply went out
	}
	c.released = true
	delete(r.convs, c.id)
	if !c.call {
		r.tombLocked(c.id, reason)
	}
	r.active--
	for drained := false; !drained; { // messages that raced the end
		select {
		case nm := <-c.in:
			r.replyError(nm.Reply, reason)
		default:
			drained = true
		}
	}
	if r.cfg.exitAfterEOC && r.state == stateReady {
		r.mu.Unlock()
		r.quiesce("end of conversation")
		r.mu.Lock()
		return
	}
	if err := r.subscribeWarmLocked(); err != nil {
		r.cfg.logger.Error("cannot reopen warm path", "err", err)
	}
	r.pullLocked()
	r.armIdleLocked()
	r.dirty.Store(true)
}

// freshRecord is how stale the registration may get while conversations
// come and go: listings and the broker's figures follow within it (the
// progress tick writes a changed record), at a cost of at most one extra
// write per interval.
const freshRecord = 250 * time.Millisecond

func (r *replica) tombLocked(id string, e *proto.Error) {
	r.tombs[id] = e
	r.tombOrder = append(r.tombOrder, id)
	if len(r.tombOrder) > maxTombs {
		delete(r.tombs, r.tombOrder[0])
		r.tombOrder = r.tombOrder[1:]
	}
}

// message converts a NATS message into a Message, counting it; the error
// is a malformed deadline header.
func (r *replica) message(nm *nats.Msg) (*Message, error) {
	r.stats.msgs.Add(1)
	r.stats.bytesIn.Add(int64(len(nm.Data)))
	dl, err := proto.ParseDeadline(nm.Header, time.Now())
	return &Message{Data: nm.Data, Header: nm.Header, Deadline: dl}, err
}

func (r *replica) replyError(to string, e *proto.Error) {
	if to == "" {
		return
	}
	m := nats.NewMsg(to)
	proto.SetError(m.Header, e)
	m.Header.Set(proto.HdrReplica, r.cfg.replicaID)
	_ = r.nc.PublishMsg(m)
}

func (r *replica) ack(to, conv string) {
	if to == "" {
		return
	}
	m := nats.NewMsg(to)
	m.Header.Set(proto.HdrReplica, r.cfg.replicaID)
	if conv != "" {
		m.Header.Set(proto.HdrConv, conv)
	}
	_ = r.nc.PublishMsg(m)
}

// asWireError turns a handler's error into the wire error the client sees.
func asWireError(err error) *proto.Error {
	var e *proto.Error
	if errors.As(err, &e) {
		return e
	}
	return proto.Errorf(proto.CodeServiceError, "%v", err)
}

// shutdown waits up to grace for open conversations, ends the rest
// (IMMED: clients get 0003/0010), deregisters and closes subscriptions.
func (r *replica) shutdown(grace time.Duration) {
	r.quiesce("shutdown")
	r.mu.Lock()
	if r.immedWanted {
		grace = 0
	}
	r.mu.Unlock()
	if !waitTimeout(&r.wg, grace) {
		r.mu.Lock()
		open := make([]*Conv, 0, len(r.convs))
		for _, c := range r.convs {
			open = append(open, c)
		}
		r.mu.Unlock()
		r.cfg.logger.Info("ending open conversations", "open", len(open))
		for _, c := range open {
			c.abort(proto.ErrDeregistered)
		}
		r.baseCancel()
		if !waitTimeout(&r.wg, 5*time.Second) {
			r.cfg.logger.Warn("handlers did not return after IMMED; exiting anyway")
		}
	}
	r.baseCancel()
	close(r.hbDone)
	<-r.hbExited
	r.unsubscribeAll()
	// Warm requests that arrived after the workers stopped go to the broker.
	for drained := false; !drained; {
		select {
		case nm := <-r.warmCh:
			r.forwardNow(nm)
		default:
			drained = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.kv.Delete(ctx, r.cfg.replicaID); err != nil {
		r.cfg.logger.Warn("deregister failed", "err", err)
	}
	_ = r.nc.FlushWithContext(ctx)
}

func (r *replica) unsubscribeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unsubscribeWarmLocked()
	for _, s := range r.subs {
		_ = s.Drain() // in-flight messages still get an answer (a NAK, an error)
	}
	r.subs = nil
}

func noop() {}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
