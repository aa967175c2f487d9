package worker

import (
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
func (r *replica) onPrivate(nm *nats.Msg) {
	op, err := proto.ParseOp(nm.Header)
	if err != nil {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "%v", err))
		return
	}
	id := nm.Header.Get(proto.HdrConv)
	if op == proto.OpPing && id == "" {
		r.ack(nm.Reply, "")
		return
	}
	if op == proto.OpCall || op == proto.OpNew {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "%s goes to the service subject %s", op, proto.WarmSubject(r.cfg.service)))
		return
	}
	if id == "" {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "%s without %s header", op, proto.HdrConv))
		return
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
		return
	}
	r.mu.Unlock()
	c.mu.Lock()
	answer := c.routeLocked(op, nm)
	c.mu.Unlock()
	switch {
	case answer != nil:
		r.replyError(nm.Reply, answer)
	case op == proto.OpPing:
		r.ack(nm.Reply, id)
	case op == proto.OpCancel:
		c.cancel()
		r.ack(nm.Reply, id)
	}
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
		c.endLocked(proto.ErrCancelled)
		c.pending, c.first = nil, nil // the client who cancels waits for no reply
		return nil
	}
	select {
	case c.in <- nm:
		return nil
	default:
		return proto.Errorf(proto.CodeBadRequest, "message sent before the previous one was answered")
	}
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
