package worker

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// onWarm takes a call or NEW from the warm path. A request that arrives
// after the replica filled up (it was in flight when the warm subscription
// was drained) is handed to the broker with the caller's reply subject in
// Muster-Reply, so it is queued and the caller never notices; if no broker
// acknowledges the hand-over, the caller gets 0215/0148 at once.
func (r *replica) onWarm(nm *nats.Msg) {
	c, handled := r.accept(nm, nm.Reply, "")
	switch {
	case c != nil:
		r.serve(c) // inline: this goroutine is a worker
	case !handled:
		r.forward(nm)
	}
}

// forward hands a request the replica cannot take to the broker, without
// holding up the caller's goroutine.
func (r *replica) forward(nm *nats.Msg) { go r.forwardNow(nm) }

// forwardNow hands nm to the broker with the caller's reply subject in
// Muster-Reply and waits for the broker's acknowledgement; without one the
// caller gets 0215/0148 at once.
func (r *replica) forwardNow(nm *nats.Msg) {
	if nm.Reply == "" {
		return
	}
	fwd := &nats.Msg{Subject: proto.CallSubject(r.cfg.service), Header: nats.Header{}, Data: nm.Data}
	for k, v := range nm.Header {
		fwd.Header[k] = v
	}
	fwd.Header.Set(proto.HdrReply, nm.Reply)
	// Longer than the broker's own 5s JetStream publish timeout, so a slow
	// but successful queueing is not reported as a failure.
	if _, err := r.nc.RequestMsg(fwd, 10*time.Second); err != nil {
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBrokerNotActive, "replica full and no broker took the request: %v", err))
	}
}

// onPulled handles what the server sends to the pull inbox: a queued
// request, or a status that closes the pull request (404, 408, 409).
func (r *replica) onPulled(nm *nats.Msg) {
	if status := nm.Header.Get(proto.HdrNATSStatus); status != "" && len(nm.Data) == 0 {
		r.mu.Lock()
		r.pulling = false
		if status == "409" { // consumer gone or too many pulls: retry at the next heartbeat
			r.lostCons = r.lostCons || strings.Contains(nm.Header.Get("Description"), "Deleted")
		} else {
			r.pullLocked()
		}
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	r.pulling = false
	r.mu.Unlock()
	ackTo := nm.Reply
	replyTo := nm.Header.Get(proto.HdrReply)
	if replyTo == "" {
		_ = r.nc.Publish(ackTo, []byte("+TERM")) // not from a broker: nobody to answer
		r.cfg.logger.Warn("queued request without reply subject dropped", "subject", nm.Subject)
		r.mu.Lock()
		r.pullLocked()
		r.mu.Unlock()
		return
	}
	c, handled := r.accept(nm, replyTo, ackTo)
	switch {
	case c != nil:
		r.work <- c // a slot is reserved, so a worker is (about to be) free
	case !handled:
		_ = r.nc.Publish(ackTo, []byte("-NAK")) // full or quiescing: another replica takes it
	}
	r.mu.Lock()
	r.pullLocked()
	r.mu.Unlock()
}

// onPrivate routes OLD, EOC and CANCEL to their conversation and answers PING.
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
	tomb := r.tombs[id]
	r.mu.Unlock()
	if !ok {
		if tomb == nil {
			tomb = proto.Errorf(proto.CodeNoConversation, "no conversation %s on replica %s", id, r.cfg.replicaID)
		}
		r.replyError(nm.Reply, tomb)
		return
	}
	if op == proto.OpPing {
		r.ack(nm.Reply, id)
		return
	}
	if op == proto.OpCancel { // abort now, even while the handler is busy
		c.mu.Lock()
		c.endLocked(proto.ErrCancelled)
		c.pending, c.first = nil, nil // the client who cancels waits for no reply
		c.mu.Unlock()
		c.cancel()
		r.ack(nm.Reply, id)
		return
	}
	select {
	case c.in <- nm:
	default:
		r.replyError(nm.Reply, proto.Errorf(proto.CodeBadRequest, "message sent before the previous one was answered"))
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
