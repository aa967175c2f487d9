package worker

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Queued requests: a replica with a free slot keeps one pull request for
// one message open at the service's durable consumer (batch 1, so a busy
// replica never holds work another could serve). What the server sends
// comes to the pull inbox: a queued request, or a status that closes the
// pull request.

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

// onPulled handles what the server sends to the pull inbox: a queued
// request, or a status that closes the pull request (404, 408, 409).
func (r *replica) onPulled(nm *nats.Msg) {
	if status := nm.Header.Get(proto.HdrNATSStatus); status != "" && len(nm.Data) == 0 {
		r.mu.Lock()
		r.pulling = false
		if status == "409" { // consumer gone or too many pulls: retry at the next heartbeat
			r.lostCons = r.lostCons || consumerDeleted(nm)
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
		r.term(ackTo) // not from a broker: nobody to answer
		r.cfg.logger.Warn("queued request without reply subject dropped", "subject", nm.Subject)
		r.mu.Lock()
		r.pullLocked()
		r.mu.Unlock()
		return
	}
	c, handled := r.accept(nm, replyTo, ackTo)
	switch {
	case c != nil:
		r.handOver(c)
	case !handled:
		_ = r.nc.Publish(ackTo, []byte("-NAK")) // full or quiescing: another replica takes it
	}
	r.mu.Lock()
	r.pullLocked()
	r.mu.Unlock()
}

// term removes a queued request that will never be served.
func (r *replica) term(ackTo string) {
	if ackTo != "" {
		_ = r.nc.Publish(ackTo, []byte("+TERM"))
	}
}

// hdrNATSDescription is the header in which nats.go puts the text of a
// status line ("NATS/1.0 409 Consumer Deleted").
const hdrNATSDescription = "Description"

// consumerDeleted reports whether a status on the pull inbox says that the
// queue consumer was deleted, so the replica must create it again.
//
// The server tells this only in the text of a 409 status line: "NATS/1.0
// 409 Consumer Deleted" (nats-server consumer.go); other 409s are "Exceeded
// MaxWaiting", "Leadership Change", "Server Shutdown" and the like, after
// which the consumer still exists. nats.go's jetstream package matches the
// same text for its ErrConsumerDeleted, unexported. TestConsumerDeletedStatus
// checks the wording against a real server.
func consumerDeleted(nm *nats.Msg) bool {
	return nm.Header.Get(proto.HdrNATSStatus) == "409" &&
		strings.Contains(strings.ToLower(nm.Header.Get(hdrNATSDescription)), "consumer deleted")
}
