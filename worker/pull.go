package worker

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Queued requests: a replica with a free slot keeps one pull request for
// one message open at the service's durable consumer (batch 1, so a busy
// replica never holds work another could serve). What the server sends
// comes to the pull inbox: a queued request, an idle heartbeat while the
// pull waits, or a status that closes the pull request.
//
// A pull request lives only at the consumer's leader and only while the
// replica's connection lasts. The replica pulls again at once when its
// connection comes back (watchConn) and when the server says the pull
// ended without a message (a 408 at expiry, a 409 for a leadership change
// or a server shutdown); and it takes a pull that has shown no sign of
// life (no message, status or idle heartbeat) for pullLost as lost (a
// leader that crashed). While the consumer cannot take pulls (no
// responders: JetStream still starting or electing a leader; 409s in a
// row) the replica retries after a backoff of pullRetryMin doubling to
// pullRetryMax.

// Queued requests come first. A replica that frees a slot would otherwise
// rejoin the warm path and pull at the same moment, and a warm call that
// arrives first would take the slot from requests that have waited in the
// queue (measured before: queued calls waited p50 0.51 s, warm ones 0.10
// s, under a load that kept the queue non-empty). So when a pull brings a
// queued request with more queued behind it (backlog: JetStream's count
// of requests not yet delivered, in the message's ack subject), the
// replica leaves the warm path, and while it has a free slot it asks for
// the next queued request without waiting (no_wait). A request it hands
// back (full: -NAK) is such a backlog too. Only when one comes with none
// behind it, or the queue has nothing for it (404), does it
// rejoin the warm path and leave a waiting pull open again. Callers that
// find no free replica meanwhile go to the broker and queue behind the
// others. (Judging by "a pull brought a request" alone sent a caller that
// calls one after the other through the queue for good once one of its
// calls had been queued: its next call came while the replica was still
// finding the queue empty.)
// (A parked standby still takes a call made on its subject: it adds a
// replica rather than taking one.)

// leaderElectedPrefix + stream + "." + consumer is JetStream's advisory
// that a consumer has a new leader.
const leaderElectedPrefix = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED."

const (
	// pullHeartbeat is the idle heartbeat the server sends while a pull
	// request waits (its "idle_heartbeat").
	// A leader that died without a word (its node stopped before its
	// "409 Server Shutdown" crossed the route) is noticed by the new
	// leader's election advisory (onLeaderElected); this silence is the
	// backstop, so it can be slow: an idle replica wakes for it only every
	// 2 s.
	pullHeartbeat = 2 * time.Second
	// pullLost is how long a pull may stay without a sign before it is
	// taken as lost and sent again.
	pullLost = 2*pullHeartbeat + time.Second
	// pullRetryMin and pullRetryMax bound the backoff between pulls the
	// server refused.
	pullRetryMin = 50 * time.Millisecond
	pullRetryMax = 500 * time.Millisecond
)

// pullLocked opens a pull request for one queued request when the replica
// has a free slot, none is open and no retry is pending.
func (r *replica) pullLocked() {
	if r.pulling || r.state != stateReady || r.active >= r.cfg.capacity || r.pullSubj == "" || r.joinPending {
		return
	}
	if time.Now().Before(r.pullAfter) {
		return // pullDue sends it
	}
	body := waitingPull
	if r.backlog {
		body = nextQueued
	}
	r.pullGen++
	if err := r.nc.PublishRequest(r.pullSubj, r.pullReplyLocked(), body); err != nil {
		r.cfg.logger.Warn("pull request failed", "err", err)
		r.retryPullLocked()
		return
	}
	r.pulling, r.pullSign, r.pullNoWait = true, time.Now(), r.backlog
}

// pullReplyLocked is the reply subject of the last pull sent. Each pull
// has its own, so what comes for a pull the replica gave up on (a
// reconnect or a new consumer leader makes it pull again while the old
// pull may live on at the server) is told apart: its statuses are
// ignored, or every one of them would open yet another pull, and the
// replica would keep several open for good (each delivering while it is
// full, to be handed back).
func (r *replica) pullReplyLocked() string {
	return r.pullInbox + "." + strconv.FormatUint(r.pullGen, 36)
}

// currentPullLocked reports whether the status nm answers the last pull
// sent (a status comes to the pull's reply subject; a delivered queued
// request keeps its own subject).
func (r *replica) currentPullLocked(nm *nats.Msg) bool {
	return nm.Subject == r.pullReplyLocked()
}

// setBacklogLocked puts queued requests before warm calls: the replica
// leaves the warm path, and its next pulls ask only for what is queued
// now. Not while a waiting pull is open: that one takes the next queued
// request as soon as there is one, and with backlog set nothing would
// bring the replica back to the warm path before it expires.
func (r *replica) setBacklogLocked() {
	if r.pulling && !r.pullNoWait {
		return
	}
	r.backlog = true
	r.unsubscribeWarmLocked()
}

// clearBacklogLocked ends the priority of queued requests (none are
// queued for this replica now, or the queue cannot be read: a queue that
// cannot be read gets no priority over warm calls) and rejoins the warm
// path if a slot is free.
func (r *replica) clearBacklogLocked() {
	r.backlog = false
	r.joinWarmLocked()
}

// The bodies of the replica's pull requests: one that waits for a queued
// request (up to pullExpires, with idle heartbeats), and one that asks
// for the next one only if it is there now (404 if not).
var (
	waitingPull = []byte(fmt.Sprintf(`{"batch":1,"expires":%d,"idle_heartbeat":%d}`, pullExpires.Nanoseconds(), pullHeartbeat.Nanoseconds()))
	nextQueued  = []byte(`{"batch":1,"no_wait":true}`)
)

// retryPullLocked schedules the next pull after the backoff, which doubles
// with every refusal in a row.
func (r *replica) retryPullLocked() {
	r.pulling = false
	r.clearBacklogLocked()
	r.pullBackoff = min(max(2*r.pullBackoff, pullRetryMin), pullRetryMax)
	r.pullAfter = time.Now().Add(r.pullBackoff)
	r.kickTickLocked()
}

// pullAgainLocked forgets any open pull request and backoff and pulls now:
// the connection came back, and with it (maybe) another server.
//
// A reconnect or a new consumer leader also ends the priority of queued
// requests (backlog): a no_wait pull sent into a failover can vanish, and
// the replica would stay off the warm path until pullLost.
func (r *replica) pullAgainLocked() {
	r.pulling, r.pullBackoff, r.pullAfter = false, 0, time.Time{}
	r.clearBacklogLocked()
	r.pullLocked()
}

// pullDue, run by the heartbeat's tick, sends a pull whose retry is due
// and takes a pull without a sign of life for pullLost as lost.
func (r *replica) pullDue() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pulling && time.Since(r.pullSign) > pullLost {
		r.cfg.logger.Info("pull request lost; pulling again", "silent", time.Since(r.pullSign).Round(time.Millisecond))
		r.pulling = false
		r.clearBacklogLocked()
	}
	r.pullLocked()
}

// watchConn pulls again at once each time the connection comes back (the
// open pull request died with the old connection, or the old server), and
// has the registration rewritten. It is a helper goroutine: it stops with
// the replica's base context.
func (r *replica) watchConn(ch chan nats.Status) {
	defer r.nc.RemoveStatusListener(ch)
	for {
		select {
		case <-r.baseCtx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			r.mu.Lock()
			r.pullAgainLocked()
			r.repullLaterLocked()
			r.mu.Unlock()
			select { // and rewrite the registration now
			case r.hbKick <- struct{}{}:
			default:
			}
		}
	}
}

// onLeaderElected takes JetStream's advisory that the service's queue
// consumer has a new leader (a NATS cluster lost or moved the old one):
// the open pull died with the old leader, so pull again at once.
func (r *replica) onLeaderElected(*nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pullAgainLocked()
	r.repullLaterLocked()
}

// repullAfter are the delays, after a reconnect or a leader election, at
// which the replica sends its pull again. A pull sent while a NATS cluster
// fails over can vanish without a word (routed to a node that is going
// away, before the server drops its interest), and an idle heartbeat's
// silence would tell only after pullLost; a pull too many is harmless
// (its message goes to the first free taker, or is NAKed to another).
var repullAfter = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}

// repullLaterLocked schedules the pulls of repullAfter.
func (r *replica) repullLaterLocked() {
	for _, d := range repullAfter {
		time.AfterFunc(d, func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.baseCtx.Err() == nil && r.state == stateReady && r.active < r.cfg.capacity {
				r.pullAgainLocked()
			}
		})
	}
}

// onPulled handles what the server sends to the pull inbox: a queued
// request, an idle heartbeat (100), or a status that closes the pull
// request (404, 408, 409, or 503 when nothing can take pulls now).
func (r *replica) onPulled(nm *nats.Msg) {
	if status := nm.Header.Get(proto.HdrNATSStatus); status != "" && len(nm.Data) == 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.currentPullLocked(nm) && !consumerDeleted(nm) {
			return // a status of a pull given up on: the last one is open
		}
		switch {
		case status == "100": // idle heartbeat: the pull is alive
			r.pullSign = time.Now()
		case consumerDeleted(nm): // the heartbeat recreates it, now
			r.pulling, r.lostCons = false, true
			r.clearBacklogLocked()
			select {
			case r.hbKick <- struct{}{}:
			default:
			}
		case status == "409" && r.pullBackoff == 0: // leadership change, server shutdown: pull again at once
			r.pulling = false
			r.pullBackoff = pullRetryMin / 2 // a second refusal in a row waits
			r.pullLocked()
		case status == "409" || status == "503":
			r.retryPullLocked()
		default: // 404, 408: the pull ended normally, with nothing for us
			r.pulling, r.pullBackoff = false, 0
			r.clearBacklogLocked() // the queue is empty: back to the warm path
			r.pullLocked()
		}
		return
	}
	r.mu.Lock()
	// A delivery closes the pull that brought it (batch 1). Which one
	// cannot be told (a queued request keeps its own subject), so it
	// counts as the last one: at worst a pull given up on delivered, and
	// the next pull makes the count of open ones what it was.
	r.pulling, r.pullBackoff = false, 0
	if queuedBehind(nm) {
		r.setBacklogLocked() // more wait behind it: they go before warm calls
	} else {
		r.backlog = false // the warm path again once a slot is free (below)
	}
	r.mu.Unlock()
	ackTo := nm.Reply
	replyTo := nm.Header.Get(proto.HdrReply)
	if replyTo == "" {
		r.term(ackTo) // not from a broker: nobody to answer
		r.cfg.logger.Warn("queued request without reply subject dropped", "subject", nm.Subject)
		r.mu.Lock()
		r.joinWarmLocked()
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
	if !handled {
		r.setBacklogLocked() // it waits in the queue again: it goes before warm calls
	}
	r.joinWarmLocked() // if nothing is queued behind it and a slot is free
	r.pullLocked()
	r.mu.Unlock()
}

// queuedBehind reports whether queued requests may wait behind nm:
// JetStream counted some not yet delivered (num_pending, the ack
// subject's tail: nats.go parses both of its forms), or nm itself comes
// again (handed back or unacknowledged before: others may wait for
// redelivery too, which num_pending does not count). An ack subject it
// cannot read counts as none.
func queuedBehind(nm *nats.Msg) bool {
	md, err := nm.Metadata()
	return err == nil && (md.NumPending > 0 || md.NumDelivered > 1)
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
