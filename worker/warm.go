package worker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// The warm path: while it has a free slot, a replica is a member of the
// service's queue group on the warm subject and callers reach it in one
// NATS request/reply. When it fills up it leaves the group by draining the
// subscription, so requests the server sent before it saw the UNSUB still
// arrive; those, and warm requests still buffered at shutdown, are
// forwarded to the broker with the caller's reply subject in Muster-Reply,
// so they are queued and the caller never notices. If no broker
// acknowledges the hand-over, the caller gets 0215/0148 at once. A bare
// request (no headers) is bounced with a no-responders status instead
// (forward): its caller goes to the broker itself.

func (r *replica) subscribeWarmLocked() error {
	if !r.mayJoinWarmLocked() {
		return nil
	}
	var err error
	r.warm, r.warmNew, err = r.subscribeWarmSubjects()
	return err
}

// mayJoinWarmLocked reports whether the replica belongs on the warm path
// now and is not on it: ready, a slot free, no standby activation being
// served, no queued requests to take first.
func (r *replica) mayJoinWarmLocked() bool {
	return r.warm == nil && r.state == stateReady && r.active < r.cfg.capacity && !r.joinPending && !r.backlog
}

// subscribeWarmSubjects subscribes the warm subject and, into the same
// buffer, the bare-NEW subject. Without the latter (the subscription
// failed, or the server refused it: credentials from before the grant) a
// client's bare NEW gets a 503 and it sends the NEW with headers to the
// warm subject: slower, never lost.
func (r *replica) subscribeWarmSubjects() (warm, bareNew *nats.Subscription, err error) {
	warm, err = r.nc.ChanQueueSubscribe(proto.WarmSubject(r.cfg.service), proto.WarmQueue, r.warmCh)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: subscribe warm path: %w", err)
	}
	if r.noBareNew.Load() {
		return warm, nil, nil
	}
	if bareNew, err = r.nc.ChanQueueSubscribe(r.newSubject, proto.WarmQueue, r.warmCh); err != nil {
		r.cfg.logger.Warn("cannot take bare NEWs; conversations open with headers", "err", err)
		return warm, nil, nil
	}
	return warm, bareNew, nil
}

// watchRefusals chains an error handler in front of the connection's
// until the returned function restores it: when the server refuses the
// subscription to the NEW subject (it says so asynchronously), the
// replica stops asking for it, rather than at every return to the warm
// path, each a line in the server's log.
func (r *replica) watchRefusals() (restore func()) {
	prev := r.nc.ErrorHandler()
	want := `subscription to "` + r.newSubject + `"`
	r.nc.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) &&
			r.noBareNew.CompareAndSwap(false, true) {
			r.cfg.logger.Warn("the server refuses bare NEWs to these credentials; conversations open with headers (new credentials fix it)", "subject", r.newSubject)
		}
		if prev != nil {
			prev(nc, sub, err)
		}
	})
	return func() { r.nc.SetErrorHandler(prev) }
}

// joinWarmLocked is subscribeWarmLocked where a failure can only be
// logged: the replica goes on serving its queue and open conversations.
func (r *replica) joinWarmLocked() {
	if err := r.subscribeWarmLocked(); err != nil {
		r.cfg.logger.Error("cannot join the warm path", "err", err)
	}
}

// unsubscribeWarmLocked leaves the warm path. It drains rather than
// unsubscribes: requests the server sent before it saw the UNSUB still
// reach the buffer instead of being dropped by the client library.
func (r *replica) unsubscribeWarmLocked() {
	if r.warm != nil {
		_ = r.warm.Drain()
		r.drainedWarm, r.warm = r.warm, nil
	}
	if r.warmNew != nil {
		_ = r.warmNew.Drain()
		r.drainedNew, r.warmNew = r.warmNew, nil
	}
}

// onWarm takes a call or NEW from the warm path on the dispatcher's
// goroutine: a call is served inline, a conversation by a worker.
func (r *replica) onWarm(nm *nats.Msg) {
	if r.isStandby() && r.activateOnly("work on the standby subject (or the warm subject, armed)") {
		r.firstWork(nm)
		return
	}
	r.serveWarm(nm)
}

// serveWarm serves a call inline, hands a NEW to a worker, and forwards
// what the replica cannot take.
func (r *replica) serveWarm(nm *nats.Msg) (inline bool) {
	c, handled := r.accept(nm, nm.Reply, "")
	switch {
	case c != nil && c.call:
		r.serveInline(c)
		return true
	case c != nil:
		r.handOver(c)
	case !handled:
		r.forward(nm)
	}
	return false
}

// firstWork serves the request that activated a standby, then joins it to
// the warm path and the queue (join). A call's reply is written out at
// once: it would wait in the connection's buffer for the flusher
// goroutine, which, with one P (GOMAXPROCS is the capacity), runs only
// after what the activation and the end of the call made runnable (the
// heartbeat's log line, a quiesce with exit_after_conversation).
// FlushTimeout writes the buffer in place with a PING and returns without
// waiting for its PONG. Timed on both sides (bench standby, 30 calls per
// run, two alternating runs each): from the reply's publish to the
// client's receipt took 221/238 µs with it, 480/602 µs without; the
// whole first reply p50 735/780 against 929/1179 µs.
func (r *replica) firstWork(nm *nats.Msg) {
	defer r.join()
	if r.serveWarm(nm) {
		_ = r.nc.FlushTimeout(time.Nanosecond)
	}
}

// forwarder takes warm requests while every slot is taken (they reached
// the replica before it left the warm path) and forwards them. It is a pool
// goroutine: it stops with the replica's base context.
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
					r.handOver(c) // a slot freed meanwhile
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

// forwardBuffered forwards the warm requests still in the buffer, which no
// worker will take any more.
func (r *replica) forwardBuffered() {
	for {
		select {
		case nm := <-r.warmCh:
			r.forward(nm)
		default:
			return
		}
	}
}

// forward hands a request the replica cannot take to the broker without
// holding up the calling goroutine; shutdown waits for the hand-over.
//
// A bare request (no headers at all: a CALL with no deadline and no
// progress asked for, as the Go client sends its warm calls) is not
// forwarded: it gets what an empty queue group gives, a no-responders
// status (Status: 503), and its caller goes to the broker itself, with
// the deadline the broker needs. A plain NATS client sees "no
// responders", which the warm subject's contract tells it to handle.
func (r *replica) forward(nm *nats.Msg) {
	if nm.Reply == "" {
		return // nobody waits for an answer
	}
	if len(nm.Header) == 0 {
		_ = r.nc.PublishMsg(&nats.Msg{Subject: nm.Reply, Header: nats.Header{proto.HdrNATSStatus: noResponders}})
		return
	}
	r.goOwned(&r.helpers, func() { r.forwardNow(nm) })
}

// noResponders is the value of a bounced bare request's Status header.
var noResponders = []string{"503"}

// forwardNow hands nm to the broker and waits (up to forwardTimeout) for
// the broker's acknowledgement; without one the caller gets 0215/0148.
func (r *replica) forwardNow(nm *nats.Msg) {
	fwd := &nats.Msg{Subject: proto.ForwardSubject(r.cfg.service), Header: nats.Header{}, Data: nm.Data}
	for k, v := range nm.Header {
		fwd.Header[k] = v
	}
	fwd.Header.Set(proto.HdrReply, nm.Reply)
	r.mu.Lock()
	r.forwarding[nm.Reply]++ // a FIND for it is answered "queued" meanwhile
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.forwarding[nm.Reply]--; r.forwarding[nm.Reply] <= 0 {
			delete(r.forwarding, nm.Reply)
		}
		r.mu.Unlock()
	}()
	if _, err := r.nc.RequestMsg(fwd, forwardTimeout); err != nil {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBrokerNotActive, "replica full and no broker took the request: %v", err))
	}
}
