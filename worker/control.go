package worker

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// onPrivate answers the private subject muster.rep.<id>: PING for the
// replica, and OLD, EOC, CANCEL and PING for one conversation. A message
// for a conversation that has ended, even if its handler has not returned
// yet, gets the end reason at once, as the tombstone gives it later.
//
// Routing happens under Conv.mu, so it cannot interleave with the end of
// the conversation, which answers a message routed just before it. The slot
// is freed only after the end, so a message that finds the conversation
// gone gets the tombstone.
//
// It reports whether the OLD's step (steps.go) stalled and another reader
// took over the private subscription meanwhile (private.go).
func (r *replica) onPrivate(nm *nats.Msg) (replaced bool) {
	if len(nm.Header) == 0 {
		return r.onBare(nm)
	}
	op, err := proto.ParseOp(nm.Header)
	if err != nil {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "%v", err))
		return false
	}
	id := nm.Header.Get(proto.HdrConv)
	if op == proto.OpPing && id == "" {
		r.ack(nm.Reply, "")
		return false
	}
	if op == proto.OpCall || op == proto.OpNew {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "%s goes to the service subject %s", op, proto.WarmSubject(r.cfg.service)))
		return false
	}
	if id == "" {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "%s without %s header", op, proto.HdrConv))
		return false
	}
	r.mu.Lock()
	c, ok := r.convs[id]
	if !ok || c.call { // a call's id is not a conversation's
		tomb := r.tombs[id]
		r.mu.Unlock()
		if tomb == nil {
			tomb = proto.Errorf(proto.CodeNoConversation, "no conversation %s on replica %s", id, r.cfg.replicaID)
		}
		r.replyError(nm.Reply, tomb)
		return false
	}
	r.mu.Unlock()
	return r.toConv(c, op, nm)
}

// onBare takes a message with no headers on the private subject: an OLD of
// the conversation whose NEW named its reply subject in Muster-Notify (the
// replica said Muster-Bare: 1 in its reply to that NEW).
func (r *replica) onBare(nm *nats.Msg) (replaced bool) {
	if nm.Reply == "" {
		return false // nobody to answer
	}
	r.mu.Lock()
	c := r.byNotify[nm.Reply]
	if c == nil {
		tomb := r.tombs[nm.Reply]
		r.mu.Unlock()
		if tomb == nil {
			tomb = proto.Errorf(proto.CodeNoConversation, "no conversation on replica %s has %s as its notify subject (a message with no headers is an OLD named by its reply subject)", r.cfg.replicaID, nm.Reply)
		}
		r.replyError(nm.Reply, tomb)
		return false
	}
	r.mu.Unlock()
	return r.toConv(c, proto.OpOld, nm)
}

// toConv hands op (OLD, EOC, CANCEL, PING with a conversation) to the
// open conversation c (an OLD of a conversation served with Steps runs
// its step here: steps.go).
func (r *replica) toConv(c *Conv, op string, nm *nats.Msg) (replaced bool) {
	if c.keepalive > 0 {
		c.heard.Store(r.mono(time.Now())) // the client is there
	}
	c.mu.Lock()
	if op == proto.OpOld && c.step != nil {
		if m := c.takeStepLocked(nm); m != nil {
			step, ctx := c.step, c.stepCtx
			c.mu.Unlock()
			return r.stepInline(c, m, step, ctx)
		}
		if c.stepBusy && c.ended == nil {
			held := c.holdStepLocked(nm)
			c.mu.Unlock()
			if !held {
				r.replyError(nm.Reply, errTwoAhead)
			}
			return false
		}
	}
	answer := c.routeLocked(op, nm)
	turn := answer == nil && op == proto.OpOld && c.startTurnLocked()
	c.mu.Unlock()
	switch {
	case answer != nil:
		r.replyError(nm.Reply, answer)
	case turn:
		c.awaitTurn() // its reply leaves in the same write as the others (turn.go)
	case op == proto.OpPing:
		r.ack(nm.Reply, c.id)
	case op == proto.OpCancel:
		c.stopCtx()
		r.ack(nm.Reply, c.id)
	}
	return false
}

// routeLocked hands op to the open conversation c, or returns the error
// its sender gets instead. OLD and EOC wait in c.in for the handler's
// Receive; CANCEL ends the conversation at once, even while the handler
// is busy.
func (c *Conv) routeLocked(op string, nm *nats.Msg) *proto.Error {
	if c.ended != nil {
		return c.reasonLocked()
	}
	switch op {
	case proto.OpPing:
		return nil
	case proto.OpCancel:
		return c.cancelLocked()
	}
	select {
	case c.in <- nm:
		return nil
	default:
		return proto.Errorf(proto.CodeBadRequest, "message sent before the previous one was answered")
	}
}

// onHeld answers the service's held subject, which every replica of the
// service subscribes to without a queue group. FIND and CANCEL name a CALL
// or NEW by the caller's reply subject (Muster-Reply); only a replica that
// knows of the request answers, so a client that does not know which
// replica took its request learns it (and that it is alive), or cancels it.
//
// FIND: the replica holding it answers like a "working" status
// (Muster-Replica, and Muster-Conv for NEW). A replica that has it on the
// way to the broker (a forward), or has warm requests waiting for a worker
// (it cannot tell whose), answers "queued": not lost, ask again. Others
// stay silent.
//
// CANCEL: the replica holding it ends it with 0003/0011 and cancels the
// handler's context, and acks.
func (r *replica) onHeld(nm *nats.Msg) {
	op := nm.Header.Get(proto.HdrOp)
	to := nm.Header.Get(proto.HdrReply)
	if op != "" && op != proto.OpFind && op != proto.OpCancel || to == "" {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "%s: want %s %s or %s with %s", proto.HeldSubject(r.cfg.service), proto.HdrOp, proto.OpFind, proto.OpCancel, proto.HdrReply))
		return
	}
	var held *Conv
	r.mu.Lock()
	r.eachLocked(func(c *Conv) bool { // at most capacity entries, and FIND is rare
		if c.firstTo == to {
			held = c
			return false
		}
		return true
	})
	waiting := held == nil && (r.forwarding[to] > 0 || len(r.warmCh) > 0)
	r.mu.Unlock()
	switch {
	case held != nil && op == proto.OpCancel:
		held.mu.Lock()
		answer := held.cancelLocked()
		held.mu.Unlock()
		if answer != nil {
			r.replyError(nm.Reply, answer)
			return
		}
		held.stopCtx()
		r.ack(nm.Reply, held.ID())
	case held != nil:
		if held.keepalive > 0 {
			// The client asking is a sign of life, as a PING is: a bare
			// NEW's client learns its replica by FIND (no "working"),
			// one ping interval in, and PINGs only from then on.
			held.heard.Store(r.mono(time.Now()))
		}
		r.status(nm.Reply, proto.StatusWorking, held.ID())
	case waiting && op != proto.OpCancel:
		r.status(nm.Reply, proto.StatusQueued, "")
	}
}

// status sends an interim status naming the replica (and conversation
// conv, if any) to a caller. It takes no lock.
func (r *replica) status(to, status, conv string) {
	if to == "" {
		return
	}
	m := nats.NewMsg(to)
	m.Header.Set(proto.HdrStatus, status)
	m.Header.Set(proto.HdrReplica, r.cfg.replicaID)
	if conv != "" {
		m.Header.Set(proto.HdrConv, conv)
	}
	_ = r.nc.PublishMsg(m)
}

// onControl handles QUIESCE and IMMED (deregister) requests.
func (r *replica) onControl(nm *nats.Msg) {
	switch op := nm.Header.Get(proto.HdrOp); op {
	case proto.OpQuiesce:
		r.ack(nm.Reply, "")
		r.quiesce("quiesce requested")
	case proto.OpImmed:
		r.ack(nm.Reply, "")
		r.mu.Lock()
		r.immedWanted = true
		r.mu.Unlock()
		r.quiesce("immediate stop requested")
	default:
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "control op %q: want %s or %s", op, proto.OpQuiesce, proto.OpImmed))
	}
}
