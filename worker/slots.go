package worker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
)

// A replica has cfg.capacity slots. A call or conversation holds one from
// accept until the reply that ends it goes out (release), or else until
// its handler returns (finished). A freed slot reopens the warm path, the
// pull and the idle timer. An ended conversation leaves a tombstone, so
// late messages for it get its end reason.

// accept takes a call or NEW conversation if a slot is free and returns
// it for the caller to serve. handled is true when the request was answered
// here instead (malformed, expired); both are zero when the replica is full
// or quiescing, and the caller forwards or NAKs the request.
//
// For a queued request, ackTo is the JetStream ack subject: the request is
// ACKed once its slot is reserved, before the handler can reply.
func (r *replica) accept(nm *nats.Msg, replyTo, ackTo string) (c *Conv, handled bool) {
	queued := ackTo != ""
	// A bare NEW (no headers, on the NEW subject): its reply subject is
	// its notify subject, its keepalive the Go client's default; it wants
	// bare replies and no progress statuses, and has no deadline.
	bareNew := len(nm.Header) == 0 && nm.Subject == r.newSubject
	op, err := proto.ParseOp(nm.Header)
	if bareNew {
		op = proto.OpNew
	}
	if err == nil && op != proto.OpCall && op != proto.OpNew {
		err = fmt.Errorf("%w: %s %s belongs on the replica subject", proto.ErrBadHeader, proto.HdrOp, op)
	}
	m, err2 := r.messageValue(nm)
	if err == nil {
		err = err2
	}
	var keepalive time.Duration
	switch {
	case err == nil && bareNew:
		keepalive = proto.BareNewKeepalive
	case err == nil && op == proto.OpNew:
		keepalive, err = proto.ParseKeepalive(nm.Header)
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
	r.kickTickLocked()
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
	c = &Conv{
		r: r, call: op == proto.OpCall, queued: queued,
		notify: nm.Header.Get(proto.HdrNotify), progress: nm.Header.Get(proto.HdrProgress) == "1",
		bareReplies: op == proto.OpNew && (bareNew || nm.Header.Get(proto.HdrBareReplies) == "1"),
		firstTo:     replyTo, started: time.Now(), keepalive: keepalive, firstMsg: m,
	}
	c.first = &c.firstMsg // one allocation for both
	if bareNew {
		c.notify = replyTo
	}
	if c.call {
		// A call has no id (no message can name a call: its caller
		// finds it by reply subject), only a number for the calls map:
		// no random bits and no string per warm call.
		r.callSeq++
		c.num = r.callSeq
		// A call's handler runs under the replica's own context (cancelled
		// at IMMED), with a cancel of its own that costs nothing until the
		// handler asks for Done (callCtx): a context.WithCancel per call
		// costs the warm path a registration in the parent's child set.
		// The caller's deadline is in Message.Deadline.
		c.cctx.Context = r.baseCtx
		c.ctx, c.cancel = &c.cctx, noop
	} else {
		c.id = convID()
		c.ctx, c.cancel = context.WithCancel(r.baseCtx) // CANCEL aborts one conversation
		c.in, c.idleOut, c.turn = make(chan *nats.Msg, 1), make(chan struct{}), make(chan struct{}, 1)
		if keepalive > 0 {
			c.heard.Store(r.mono(c.started))
		}
	}
	if c.call {
		r.calls[c.num] = c // so IMMED, FIND and the progress tick find it
	} else {
		r.convs[c.id] = c
		// Its OLDs may come bare, named by their reply subject, unless
		// another open conversation has that subject (the first keeps it,
		// so no NEW can take over another's messages), or an ended one
		// whose tombstone is under it (a late bare OLD for that one must
		// get its end, not go to this one).
		if c.notify != "" && r.byNotify[c.notify] == nil && r.tombs[c.notify] == nil && proto.ValidNotify(c.notify) {
			r.byNotify[c.notify] = c
			c.bare = true
		}
	}
	r.serving.addLocked()
	r.mu.Unlock()

	r.stats.convs.Add(1)
	if queued {
		// "working" first: a caller told "queued" learns its replica now,
		// so if the replica dies from here on the caller's PINGs tell it.
		c.sendWorking()
		if err := r.ackOnce(ackTo); err != nil && !r.ackTookEffect(nm) {
			// Unconfirmed, and still in the queue (or the queue cannot
			// tell): JetStream delivers it again (here or to another
			// replica), so running it now could run it twice. Give the
			// slot back and hand it back, so that the next delivery need
			// not wait for the consumer's AckWait.
			r.stats.convs.Add(-1)
			r.finished(c)
			_ = r.nc.Publish(ackTo, []byte("-NAK"))
			r.cfg.logger.Warn("queued request handed back: its ack was not confirmed", "err", err)
			return nil, true
		}
		r.stats.queued.Add(1)
	}
	return c, true
}

// ackTimeout bounds the wait for JetStream to confirm an ack.
const ackTimeout = 2 * time.Second

// ackSync acknowledges a queued request and waits for the server to
// confirm it (a "double ack"): a request is run only once the queue has
// let go of it, so a delivery or ack lost in a NATS restart or a node loss
// is redelivered after AckWait instead of being lost or run twice.
func (r *replica) ackSync(ackTo string) error {
	_, err := r.nc.Request(ackTo, []byte("+ACK"), ackTimeout)
	return err
}

// ackOnce is ackSync, or the test's stand-in for it (ackHook).
func (r *replica) ackOnce(ackTo string) error {
	if r.ackHook != nil {
		return r.ackHook(ackTo)
	}
	return r.ackSync(ackTo)
}

// ackVerifyWait bounds how long a replica asks the queue whether an
// unconfirmed ack took effect: a consumer's new leader is elected within
// 4–9 s of a node loss.
const ackVerifyWait = 10 * time.Second

// ackTookEffect reports whether a queued request whose ack was not
// confirmed has left the queue all the same: the server applied the ack
// and only its answer was lost (a consumer leader that died just after).
// Then nobody else will run it, so this replica must, or it is lost. It
// asks the queue stream which sequences it still holds (never a
// message's content), until the stream answers or ackVerifyWait passes;
// false when it cannot tell.
func (r *replica) ackTookEffect(nm *nats.Msg) bool {
	md, err := nm.Metadata()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(r.baseCtx, ackVerifyWait)
	defer cancel()
	for {
		if gone, err := r.leftQueue(ctx, md.Sequence.Stream); err == nil {
			return gone
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// leftQueue reports whether the queue stream no longer holds sequence seq
// (a work queue removes a request once it is acknowledged).
func (r *replica) leftQueue(ctx context.Context, seq uint64) (bool, error) {
	s, err := r.js.Stream(ctx, proto.QueueStream)
	if err != nil {
		return false, err
	}
	info, err := s.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return false, err
	}
	st := info.State
	return seq < st.FirstSeq || st.Msgs == 0 || slices.Contains(st.Deleted, seq), nil
}

func noop() {}

func (r *replica) isFull() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active >= r.cfg.capacity || r.state != stateReady
}

// release frees the slot of a call or conversation whose final reply is
// going out; its handler may still be running.
func (r *replica) release(c *Conv) {
	r.mu.Lock()
	r.releaseLocked(c)
	r.mu.Unlock()
}

// finished runs when no handler serves c any more (it returned, or no
// worker ever took c): its slot is free, and shutdown no longer waits for it.
func (r *replica) finished(c *Conv) {
	c.stopCtx()
	r.mu.Lock()
	r.releaseLocked(c)
	r.serving.doneLocked()
	r.mu.Unlock()
}

// releaseLocked frees c's slot once (c has ended by then, so any message
// for it is answered with its end reason: by the end itself, then by
// onPrivate, then by the tombstone) and reopens the warm path.
func (r *replica) releaseLocked(c *Conv) {
	if c.released {
		return // already freed when its last reply went out
	}
	c.released = true
	if c.call {
		delete(r.calls, c.num)
	} else {
		delete(r.convs, c.id)
		notify := ""
		if c.bare {
			delete(r.byNotify, c.notify)
			notify = c.notify // a bare OLD sent after the end gets the tombstone too
		}
		r.tombLocked(c.id, notify, c.endReason())
	}
	r.active--
	if r.cfg.exitAfterEOC && r.state == stateReady {
		r.quiesceLocked("end of conversation")
		return
	}
	r.joinWarmLocked()
	r.pullLocked()
	r.armIdleLocked()
	r.dirty.Store(true)
}

// tombLocked remembers why conversation id ended (the last maxTombs
// conversations), by its id and, when its OLDs could come bare, by its
// notify subject ("" if not) too: no id has a dot, every such subject has
// one.
//
// No two tombstones are ever under one notify subject: accept offers no
// bare OLDs for a subject with a tombstone, so only the conversation that
// wrote it removes it.
func (r *replica) tombLocked(id, notify string, e *proto.Error) {
	r.tombs[id] = e
	if notify != "" {
		r.tombs[notify] = e
	}
	r.tombOrder = append(r.tombOrder, tomb{id, notify})
	if len(r.tombOrder) > maxTombs {
		old := r.tombOrder[0]
		delete(r.tombs, old.id)
		if old.notify != "" {
			delete(r.tombs, old.notify)
		}
		r.tombOrder = r.tombOrder[1:]
	}
}

// tomb is a tombstone's keys in replica.tombs.
type tomb struct{ id, notify string }

// eachLocked calls f for every call and conversation the replica holds
// (calls first) until f returns false. The caller holds r.mu.
func (r *replica) eachLocked(f func(c *Conv) bool) {
	for _, c := range r.calls {
		if !f(c) {
			return
		}
	}
	for _, c := range r.convs {
		if !f(c) {
			return
		}
	}
}

// convID returns a new conversation id: 128 random bits from crypto/rand
// in 22 characters of unpadded base64url ([A-Za-z0-9_-], one subject
// token). A NUID would be unique but predictable from the last one (a
// fixed prefix and a counter), and a guessed live id would let anyone who
// can reach muster.rep.* send into another client's conversation.
func convID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}
