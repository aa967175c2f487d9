package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Message is one client message of a call or conversation.
type Message struct {
	Data     []byte
	Header   nats.Header
	Seq      int       // 1 for the first message of the conversation
	Deadline time.Time // the caller's deadline, zero if it sent none (the Go client sends none with a warm call or an OLD: it keeps the deadline itself)
}

// Conv is one call or conversation, owned by the handler serving it. A call
// is a conversation of one message: Receive returns it, Reply answers it,
// and the call is over.
type Conv struct {
	r      *replica
	id     string
	call   bool
	queued bool   // taken from the broker's queue (for the registration's ConvInfo)
	notify string // client's event subject (conversations)
	bare   bool   // its OLDs may come bare, named by notify (set by accept, before the handler runs)
	// bareReplies: the client takes the reply to NEW and the ending reply
	// without headers (HdrBareReplies on the NEW); used while bare.
	bareReplies bool
	progress    bool
	ctx         context.Context
	cancel      context.CancelFunc // a conversation's; a call's is cctx.cancel (stopCtx)
	cctx        callCtx            // a call's context (ctx points here)
	in          chan *nats.Msg     // OLD and EOC, routed by onPrivate (CANCEL acts at once)
	// keepalive is what the client asked for with NEW (Muster-Keepalive; 0:
	// none): the replica ends the conversation when nothing came from the
	// client for lostAfter keepalives. heard is when the client's last
	// message for it came, on the replica's monotonic clock (r.mono): a
	// step of the wall clock (a VM's clock sync) must not make a client
	// look silent.
	keepalive time.Duration
	heard     atomic.Int64
	// stepping is set while onPrivate waits for the handler's reply to
	// the OLD it handed over; turn gives it back (turn.go).
	stepping atomic.Bool
	turn     chan struct{}

	mu        sync.Mutex
	first     *Message // the opening message, until Receive takes it
	firstTo   string   // reply subject of the opening message
	pending   *Message // received and not yet replied
	replyTo   string   // where the pending message's reply goes
	ended     *proto.Error
	released  bool    // slot given back (guarded by replica.mu)
	num       uint64  // a call's key in replica.calls (0 for a conversation)
	firstMsg  Message // what first points to at the start (kept in the Conv: one allocation less)
	seq       int
	started   time.Time     // when the opening message was accepted
	waitSince time.Time     // when Receive began waiting for the client (zero while not waiting)
	idleOut   chan struct{} // closed when the conversation timed out (CONV-NONACT)
	working   bool          // the "working" status went out
	slowTurn  bool          // the last wait for a reply timed out (turn.go)
	// step serves the conversation's OLDs inline once Steps has answered
	// the opening message (steps.go); stepBusy while one runs.
	step     StepFunc
	stepCtx  context.Context
	stepBusy bool
	stepWG   sync.WaitGroup // a step running inline; Steps waits for it
	stepNext *nats.Msg      // an OLD that came while a step ran (holdStepLocked)
}

// ID returns the conversation id ("" for a call).
func (c *Conv) ID() string {
	if c.call {
		return ""
	}
	return c.id
}

// IsCall reports whether this is a one-shot call rather than a conversation.
func (c *Conv) IsCall() bool { return c.call }

// Service returns the service being served.
func (c *Conv) Service() proto.Service { return c.r.cfg.service }

// Receive returns the next client message. The first call returns the
// opening message at once. Later calls wait for the client's next message
// and return a *proto.Error when the conversation ends instead: proto.ErrEOC
// (client ended it), proto.ErrCancelled, proto.ErrConvTimeout (CONV-NONACT),
// proto.ErrShutdownImmed (the replica is stopping). Every message must be
// answered with Reply or ReplyEnd before the next Receive.
func (c *Conv) Receive(ctx context.Context) (*Message, error) {
	c.mu.Lock()
	if c.pending != nil {
		c.mu.Unlock()
		return nil, ErrNotReplied
	}
	if c.first != nil {
		m := c.first
		c.first = nil
		c.takeLocked(m, c.firstTo)
		c.mu.Unlock()
		return m, nil
	}
	if c.ended != nil {
		e := c.ended
		c.mu.Unlock()
		return nil, e
	}
	c.waitSince = time.Now() // the replica's tick ends it after convTimeout (CONV-NONACT)
	c.mu.Unlock()
	// Every way out takes c.mu: it stops waiting there (waitSince), in the
	// same step as it takes the message or the end.
	// The handler's own ctx is usually the one it was given (c.ctx):
	// then one case less to wait on.
	done := ctx.Done()
	if done == c.ctx.Done() {
		done = nil
	}
	for {
		select {
		case nm := <-c.in:
			if nm == nil { // a step ended the conversation (steps.go)
				c.mu.Lock()
				e := c.ended
				if e != nil {
					c.waitSince = time.Time{}
				}
				c.mu.Unlock()
				if e != nil {
					return nil, e
				}
				continue
			}
			op := proto.OpOld // a bare message is an OLD (onPrivate)
			if len(nm.Header) > 0 {
				op, _ = proto.ParseOp(nm.Header)
			}
			switch op {
			case proto.OpOld:
				m, _ := c.r.message(nm)
				c.mu.Lock()
				c.waitSince = time.Time{}
				if c.ended != nil { // it ended as the message came
					e, reason := c.ended, c.reasonLocked()
					c.mu.Unlock()
					c.r.replyError(nm.Reply, reason)
					return nil, e
				}
				c.takeLocked(m, nm.Reply)
				c.mu.Unlock()
				return m, nil
			case proto.OpEOC:
				c.mu.Lock()
				c.waitSince = time.Time{}
				c.endLocked(proto.ErrEOC)
				c.mu.Unlock()
				c.r.ack(nm.Reply, c.id)
				return nil, proto.ErrEOC
			}
		case <-c.idleOut:
			return nil, c.stopWaiting(nil)
		case <-c.ctx.Done():
			return nil, c.stopWaiting(proto.ErrShutdownImmed)
		case <-done:
			// The conversation's own end (CANCEL, IMMED) is the better answer.
			if e := c.stopWaiting(nil); e != nil {
				return nil, e
			}
			return nil, ctx.Err()
		}
	}
}

// stopWaiting ends Receive's wait and returns why the conversation ended,
// or def if it has not.
func (c *Conv) stopWaiting(def *proto.Error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waitSince = time.Time{}
	if c.ended != nil {
		return c.ended
	}
	if def == nil {
		return nil
	}
	return def
}

// Reply answers the message last returned by Receive; the conversation goes
// on (for a call, Reply ends it).
func (c *Conv) Reply(data []byte) error { return c.reply(data, c.call) }

// ReplyEnd answers the last message and ends the conversation (EOC by the
// replica): the client sees the reply and then proto.ErrAfterEOC if it sends again.
func (c *Conv) ReplyEnd(data []byte) error { return c.reply(data, true) }

func (c *Conv) reply(data []byte, end bool) error {
	defer c.endTurn()
	to, via, m, err := c.replyMsg(data, end)
	if err != nil {
		return err
	}
	c.r.stats.bytesOut.Add(int64(len(data)))
	if end && c.r.cfg.exitAfterEOC {
		// This replica takes no next request: the reply first, then the
		// release that quiesces it (its unsubscribes, its log line).
		err := c.publishReply(to, via, m, data)
		c.r.release(c)
		return err
	}
	if end {
		// Free the slot before the reply leaves, so the caller's next
		// request finds the replica free (the handler may still be returning).
		c.r.release(c)
	}
	return c.publishReply(to, via, m, data)
}

// publishReply sends a reply: m when it has headers, else the bare data,
// with reply subject via when it has one (a bare reply to NEW or a bare
// ending reply: HdrBareReplies).
func (c *Conv) publishReply(to, via string, m *nats.Msg, data []byte) error {
	switch {
	case m != nil:
		return c.r.nc.PublishMsg(m)
	case via != "":
		return c.r.nc.PublishRequest(to, via, data)
	}
	return c.r.nc.Publish(to, data)
}

// replyMsg marks the pending message answered and returns where its reply
// goes, and the reply with its headers when it needs any (nil for the
// bare payload, which then may have a reply subject via that says what
// the headers would: HdrBareReplies).
func (c *Conv) replyMsg(data []byte, end bool) (to, via string, _ *nats.Msg, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		if c.ended != nil {
			return "", "", nil, c.ended // cancelled or ended meanwhile
		}
		return "", "", nil, ErrReplied
	}
	to = c.replyTo
	c.pending, c.replyTo = nil, ""
	if max := c.r.maxPayload.Load() - 1024; int64(len(data)) > max {
		e := proto.Errorf(proto.CodePayloadTooBig, "reply of %d bytes exceeds the limit of %d", len(data), max)
		c.endLocked(e)
		c.r.replyError(to, e)
		return "", "", nil, e
	}
	if end {
		c.endLocked(proto.ErrEOC)
	}
	if c.call {
		// A call's successful reply is the bare payload: nothing for the
		// caller to parse on the hot path.
		return to, "", nil, nil
	}
	if c.seq > 1 && !end {
		// The client knows the conversation and replica already.
		return to, "", nil, nil
	}
	if c.bare && c.bareReplies {
		// The client takes them without headers: the reply subject says
		// it (a reply to NEW that ends the conversation keeps headers).
		switch {
		case end && c.seq > 1:
			return to, proto.EOCReplySubject(c.id), nil, nil
		case !end:
			return to, proto.ConvReplySubject(c.r.cfg.replicaID, c.id), nil, nil
		}
	}
	m := nats.NewMsg(to)
	m.Data = data
	m.Header.Set(proto.HdrReplica, c.r.cfg.replicaID)
	m.Header.Set(proto.HdrConv, c.id)
	if end {
		m.Header.Set(proto.HdrStatus, proto.StatusEOC)
	} else if c.seq == 1 && c.bare {
		m.Header.Set(proto.HdrBare, "1")
	}
	return to, "", m, nil
}

// takeLocked makes m the message awaiting a reply.
func (c *Conv) takeLocked(m *Message, replyTo string) {
	c.seq++
	m.Seq = c.seq
	c.pending, c.replyTo = m, replyTo
}

// endLocked records why the conversation ended; the first reason wins. A
// message the client sent meanwhile, which the handler will not Receive
// now, is answered with the end reason at once; later ones get it from
// onPrivate, and after the slot is freed from the tombstone.
func (c *Conv) endLocked(e *proto.Error) {
	if c.ended != nil {
		return
	}
	c.ended = e
	if nm := c.stepNext; nm != nil {
		c.stepNext = nil
		c.r.replyError(nm.Reply, c.reasonLocked())
	}
	if c.in == nil {
		return // a call
	}
	select {
	case nm := <-c.in:
		c.r.replyError(nm.Reply, c.reasonLocked())
	default:
	}
}

// reasonLocked is the end reason a client gets for the ended conversation.
func (c *Conv) reasonLocked() *proto.Error {
	switch c.ended {
	case nil:
		return proto.ErrEOC
	case proto.ErrShutdownImmed: // what the handler sees; the client sees why
		return proto.ErrDeregistered
	}
	return c.ended
}

// notifyLocked tells a client that is not waiting for a reply that the
// conversation ended, on the event subject it gave with NEW.
func (c *Conv) notifyLocked(e *proto.Error) {
	if c.notify == "" {
		return
	}
	m := nats.NewMsg(c.notify)
	proto.SetError(m.Header, e)
	m.Header.Set(proto.HdrStatus, proto.StatusEnded)
	m.Header.Set(proto.HdrConv, c.id)
	m.Header.Set(proto.HdrReplica, c.r.cfg.replicaID)
	_ = c.r.nc.PublishMsg(m)
}

// sendWorking sends the client a "working" status while the opening
// message is still unanswered, so it knows which replica holds its request
// and can watch that replica's liveness. The replica's progress tick calls
// it for requests older than progressDelay; requests taken from the queue
// get it at once.
func (c *Conv) sendWorking() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.progress || c.working || c.ended != nil {
		return
	}
	to := c.firstTo
	if c.first == nil {
		if c.pending == nil || c.seq != 1 {
			return
		}
		to = c.replyTo
	}
	c.working = true
	m := nats.NewMsg(to)
	m.Header.Set(proto.HdrStatus, proto.StatusWorking)
	m.Header.Set(proto.HdrReplica, c.r.cfg.replicaID)
	if !c.call {
		m.Header.Set(proto.HdrConv, c.id)
	}
	_ = c.r.nc.PublishMsg(m)
}

// timeOut ends a conversation whose client sent nothing for convTimeout
// while the handler waited (0003/0073 on both sides).
func (c *Conv) timeOut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended == nil {
		c.endLocked(proto.ErrConvTimeout)
		c.notifyLocked(proto.ErrConvTimeout)
		close(c.idleOut)
	}
}

// finish runs when the handler returns: an unanswered message gets an
// answer, and a client still in the conversation learns it is over.
func (c *Conv) finish(herr error) {
	defer c.endTurn()
	c.mu.Lock()
	defer c.mu.Unlock()
	var e *proto.Error
	if herr != nil {
		e = asWireError(herr)
	}
	to := c.replyTo
	if c.first != nil {
		to = c.firstTo
	}
	if c.pending != nil || c.first != nil {
		c.pending, c.first = nil, nil
		if e != nil {
			c.r.replyError(to, e)
			c.endLocked(e)
			return
		}
		// Returned without replying: an empty reply that ends it.
		m := nats.NewMsg(to)
		m.Header.Set(proto.HdrReplica, c.r.cfg.replicaID)
		if !c.call {
			m.Header.Set(proto.HdrConv, c.id)
			m.Header.Set(proto.HdrStatus, proto.StatusEOC)
		}
		_ = c.r.nc.PublishMsg(m)
		c.endLocked(proto.ErrEOC)
		return
	}
	if c.ended == nil {
		if e == nil {
			e = proto.ErrEOC
		}
		c.endLocked(e)
		c.notifyLocked(e)
	}
}

// stopCtx cancels the handler's context: a conversation's, or a call's own.
func (c *Conv) stopCtx() {
	if c.call {
		c.cctx.cancel(context.Canceled)
		return
	}
	c.cancel()
}

// cancelLocked ends the call or conversation at the client's request
// (CANCEL): 0003/0011, and the message the handler has not answered gets
// no reply, since the client who cancels waits for none. The caller then
// cancels the handler's context (stopCtx). It returns the end reason when
// the conversation had already ended.
func (c *Conv) cancelLocked() *proto.Error {
	if c.ended != nil {
		return c.reasonLocked()
	}
	c.endLocked(proto.ErrCancelled)
	c.pending, c.first = nil, nil
	return nil
}

// loseClient ends a conversation whose client sent nothing for lostAfter
// keepalives (it died, or its pipe closed): 0003/0012 on both sides, the
// handler's context is cancelled and its unanswered message dropped.
func (c *Conv) loseClient(silent time.Duration) {
	c.mu.Lock()
	if c.ended != nil {
		c.mu.Unlock()
		return
	}
	e := proto.Errorf(proto.CodeLoggedOff, "client of conversation %s silent for %v (keepalive %v)", c.id, silent.Round(time.Millisecond), c.keepalive)
	c.endLocked(e)
	c.pending, c.first = nil, nil
	c.notifyLocked(e)
	c.mu.Unlock()
	c.stopCtx()
}

// abort ends the conversation now (IMMED): the client gets code e on its
// pending message or as an event, the handler gets proto.ErrShutdownImmed.
func (c *Conv) abort(e *proto.Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended != nil {
		return
	}
	c.endLocked(proto.ErrShutdownImmed)
	switch {
	case c.first != nil:
		c.r.replyError(c.firstTo, e)
		c.first = nil
	case c.pending != nil:
		c.r.replyError(c.replyTo, e)
		c.pending = nil
	default:
		c.notifyLocked(e)
	}
	c.stopCtx()
}

// endReason returns why the conversation ended, for tombstones.
func (c *Conv) endReason() *proto.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reasonLocked()
}
