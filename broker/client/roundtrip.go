package client

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// watch is what a waiting request knows about who holds it.
type watch struct {
	replica string         // replica to ping ("" until a "working" status or a FIND names it)
	conv    string         // conversation id, checked by the ping
	events  chan *nats.Msg // conversation events (nil for calls)
	// svc is the service of a CALL or NEW (zero for OLD …): on its held
	// subject a FIND asks which replica holds the request, and a CANCEL
	// cancels it. The subject is built only then, not for every call.
	svc  proto.Service
	find bool // FIND while the holder is unknown (the warm attempt only)
	// token and ch are a waiter the caller keeps from one round trip to
	// the next (a conversation's event token, rearmed), reply its subject;
	// "" for a fresh one.
	token, reply string
	ch           chan *nats.Msg
	// dlSet: the caller has written the deadline header already.
	dlSet bool
	// bare: a CALL sent with no headers at all (call.go): no deadline
	// header, no statuses; cancelled at the replica when ctx ends.
	bare bool
	// resend: m goes to a broker with Muster-Once, so it may be sent again
	// while no broker has said a word about it.
	resend bool
	// dl and expire are the call's deadline when its ctx has none (the
	// client's default timeout, call.go): a pooled timer fires expire at
	// dl, so a call costs no derived context. Zero and nil otherwise.
	dl     time.Time
	expire <-chan time.Time
}

// A request sent to the brokers that no broker has said a word about is
// sent again (Muster-Once) first resendAfter ping intervals after it left
// (5 s by default: a broker answers within its 5 s queue timeout unless a
// backlog holds it up), then at doubling gaps, and not once resendFor has
// passed since the first send, well inside proto.DedupWindow. Repeats are
// for a broker that died with the request; a slow one is not dead, and
// early repeats would only join its backlog (TestResendStormCluster). A
// call nobody answers ends at its deadline.
const (
	resendAfter = 10
	resendFor   = proto.DedupWindow / 2
)

// roundTrip publishes m with a fresh reply token (or the one in w) and waits for the final
// message: a reply, an error reply, a 503, a conversation event, a dead
// replica, the deadline or Close, whichever comes first.
//
// A request unanswered after one ping interval (the sweeper's nudge)
// starts watching its replica, every interval: it PINGs the replica it
// knows, or, for a warm CALL or NEW whose replica has sent no "working"
// status yet, asks the service's replicas which one holds it (FIND). Two
// misses in a row end the wait: 0003/0067 for a replica that does not
// answer, 0003/0012 for one that is gone or a request nobody holds.
//
// When ctx is cancelled (not at its deadline: the replica knows that one
// itself, unless the call went bare), a CALL or NEW is cancelled at the
// replica that holds it.
func (c *Client) roundTrip(ctx context.Context, m *nats.Msg, w watch) (*nats.Msg, error) {
	if err := c.checkSize(m); err != nil {
		return nil, err
	}
	if !w.dlSet && !w.bare {
		dl := w.dl
		if dl.IsZero() {
			dl, _ = ctx.Deadline()
		}
		m.Header.Set(proto.HdrDeadline, proto.FormatDeadline(dl))
	}
	// FIND and CANCEL use reply, not m.Reply: reading m's fields into
	// what they send would make the compiler move every request's headers
	// and data to the heap.
	token, reply, ch := w.token, w.reply, w.ch
	// spare: this round trip's token may serve a later request (recycle):
	// a bare call, on a token of its own, answered by the first message
	// its token got with a bare reply.
	spare := false
	if token == "" {
		var err error
		if token, reply, ch, err = c.register(w.replica != "" || w.svc.Class != "", m.Subject, w.bare); err != nil {
			return nil, err
		}
		defer func() {
			if spare {
				c.recycle(token, reply, ch)
			} else {
				c.release(token, ch)
			}
		}()
	}
	m.Reply = reply
	cuts := c.cuts.Load()
	var tr *Trace
	if w.bare || m.Header.Get(proto.HdrProgress) == "1" { // calls and NEWs: a trace is asked for in ctx
		if tr = traceOf(ctx); tr != nil && tr.Sent.IsZero() {
			tr.Sent = time.Now()
		}
	}
	if err := c.nc.PublishMsg(m); err != nil {
		return nil, transportError(err)
	}
	var sent, nextSend time.Time
	gap := time.Duration(resendAfter) * c.ping
	resent := false // a repeat went out: a 503 now says nothing of the first copy
	if w.resend {
		sent = time.Now()
		nextSend = sent.Add(gap)
	}
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	misses, maybes := 0, 0
	queued := false           // the broker has it: nobody holds it until a replica says "working"
	qseq := ""                // its sequence in the queue stream (Muster-Seq of "queued")
	for turn := 0; ; turn++ { // turn 0: nothing has come for the token yet
		select {
		case r := <-ch:
			if r == nudge {
				ticker = time.NewTicker(c.ping)
				tick = ticker.C
				if !w.dl.IsZero() {
					// A slow call: its checks need a context that ends at
					// its deadline.
					var cancel context.CancelFunc
					ctx, cancel = context.WithDeadline(ctx, w.dl)
					defer cancel()
				}
				break // check at once
			}
			if r.Header.Get(proto.HdrNATSStatus) == "503" {
				if resent {
					// A repeat found no broker: the first copy may be
					// queued (its broker died after storing it), and a
					// replica may still take it. Silence, not a verdict.
					continue
				}
				return nil, errNoResponders
			}
			switch r.Header.Get(proto.HdrStatus) {
			case proto.StatusWorking:
				c.holder(&w, r)
				misses = 0
				if tr != nil {
					tr.Working, tr.Replica = time.Now(), w.replica
				}
				continue
			case proto.StatusQueued:
				queued = true
				qseq = r.Header.Get(proto.HdrSeq)
				if tr != nil {
					tr.Queued, tr.Seq = time.Now(), qseq
				}
				continue
			}
			if tr != nil {
				tr.Reply = time.Now()
				tr.Warm = tr.Queued.IsZero()
				if tr.Replica == "" {
					tr.Replica = r.Header.Get(proto.HdrReplica)
				}
			}
			spare = turn == 0 && w.bare && r.Header == nil
			return r, nil
		case ev := <-w.events:
			if e := proto.ErrorFromHeader(ev.Header); e != nil {
				return nil, e
			}
			continue
		case <-c.done:
			return nil, closedError()
		case <-w.expire:
			return nil, c.gaveUp(w, reply, context.DeadlineExceeded)
		case <-ctx.Done():
			return nil, c.gaveUp(w, reply, ctx.Err())
		case <-tick:
		}
		var err error
		// After a cut of our connection the holder may have answered into
		// it: ask whether it still holds the request rather than whether
		// it lives (a PING it would pass).
		cut := c.cuts.Load() != cuts
		askHeld := cut && w.replica != "" && w.svc.Class != ""
		switch {
		case w.resend && !queued && w.replica == "":
			// Sent to a broker, and not a word back: the broker may have
			// died with it (before or after it queued it), or our
			// connection dropped. Send it again (see resendAfter): with
			// Muster-Once the brokers queue it at most once, and a live
			// one answers ("queued" with the first copy's sequence if it
			// has it). Not while cut off: the repeats would only fill the
			// reconnect buffer.
			if now := time.Now(); !now.Before(nextSend) && now.Sub(sent) < resendFor && c.nc.IsConnected() {
				if err := c.nc.PublishMsg(m); err != nil {
					return nil, transportError(err)
				}
				resent = true
				gap *= 2
				nextSend = now.Add(gap)
			}
			continue
		case w.replica != "" && !askHeld:
			err = c.pingReplica(ctx, w)
		case cut && queued && w.replica == "" && qseq != "":
			// Queued, then cut off: the request may still wait in the
			// queue, or a replica took it and its "working" or its reply
			// went into the cut. Ask the broker, then the replicas.
			var inQueue bool
			if inQueue, err = c.findQueued(ctx, w.svc, qseq, reply); err == nil && !inQueue {
				var r *nats.Msg
				if r, err = c.findHolder(ctx, proto.HeldSubject(w.svc), reply); r != nil {
					c.holder(&w, r)
				}
			}
		case askHeld || (w.find && !queued):
			var r *nats.Msg
			if r, err = c.findHolder(ctx, proto.HeldSubject(w.svc), reply); r != nil {
				c.holder(&w, r)
			}
		default:
			continue // waiting in the queue: nobody to ask
		}
		if errors.Is(err, errMaybeHeld) {
			// A replica may have it in its buffer. Such a wait is short
			// (a full replica hands its buffer to the broker), so after
			// maxMaybe answers in a row they count as misses: a replica
			// with a steady backlog says "maybe" to every FIND.
			if maybes++; maybes <= maxMaybe {
				continue
			}
			err = errNotHeld
		} else {
			maybes = 0
		}
		if err == nil {
			misses = 0
			continue
		}
		cut = c.cuts.Load() != cuts
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, errNotHeld) || (cut && errors.Is(err, proto.ErrLoggedOff)) {
			// After a cut, a 503 from the replica's subject may only mean
			// it has not subscribed again yet: a miss, not a verdict.
			if !c.nc.IsConnected() {
				continue // cut off from NATS ourselves: nothing to judge the replica by
			}
			if misses++; misses < 2 {
				continue
			}
			switch {
			case cut:
				// Our connection dropped since the request left: the
				// transport may have lost it (or its reply), not the
				// replica. It may or may not have run.
				err = proto.Errorf(proto.CodeBrokerNotActive, "the connection to NATS dropped while the request was in flight; it may or may not have run")
			case errors.Is(err, errNotHeld):
				err = proto.Errorf(proto.CodeLoggedOff, "no replica holds the request any more: the one that took it is gone")
			default:
				err = proto.Errorf(proto.CodePartnerTimeout, "replica %s does not answer", w.replica)
			}
		}
		select { // a reply that raced the failed check wins
		case r := <-ch:
			if r != nudge && r.Header.Get(proto.HdrNATSStatus) == "503" {
				// NATS's no responders, late: nobody got the request
				// (or, after a repeat, no broker is there now).
				if !resent {
					return nil, errNoResponders
				}
				break
			}
			if s := r.Header.Get(proto.HdrStatus); r != nudge && (s == "" || s == proto.StatusEOC || s == proto.StatusError) {
				return r, nil
			}
		default:
		}
		return nil, err
	}
}

// gaveUp ends a wait that its deadline or its caller (cause) ended. A CALL
// or NEW is cancelled at the replica that holds it when the replica cannot
// know: the caller cancelled, or the call went bare (no deadline header).
func (c *Client) gaveUp(w watch, reply string, cause error) error {
	if w.svc.Class != "" && (w.bare || errors.Is(cause, context.Canceled)) {
		c.cancelHeld(proto.HeldSubject(w.svc), reply)
	}
	return proto.Errorf(proto.CodeWaitTimeout, "no reply within the deadline: %w", cause)
}

// holder takes the replica (and for NEW the conversation) a "working"
// status or a FIND answer names.
func (c *Client) holder(w *watch, r *nats.Msg) {
	if id := r.Header.Get(proto.HdrReplica); proto.ValidID(id) == nil {
		w.replica = id
	}
	if id := r.Header.Get(proto.HdrConv); w.conv == "" && proto.ValidID(id) == nil {
		w.conv = id // a NEW's conversation: pings keep it alive at the replica
	}
}

// errNotHeld is a FIND that found no replica holding the request.
var errNotHeld = errors.New("client: no replica holds the request")

// errMaybeHeld is a FIND answered "queued": a replica may have the request
// in its buffer, not yet taken.
var errMaybeHeld = errors.New("client: a replica may hold the request")

// maxMaybe is how many "queued" answers to FIND in a row a caller accepts
// (one per ping interval: 2 s with the default) before they count as misses.
const maxMaybe = 4

// findHolder asks the service's replicas (held subject) which one holds
// the request whose reply subject is reply. It returns the holder's answer
// (a "working" status), errMaybeHeld for an answer that says the request
// is on its way (a replica's buffer or a hand-over to the broker), or errNotHeld
// when nobody answered within half a ping interval or no replica is
// there at all.
func (c *Client) findHolder(ctx context.Context, held, reply string) (*nats.Msg, error) {
	fm := nats.NewMsg(held)
	fm.Header.Set(proto.HdrOp, proto.OpFind)
	fm.Header.Set(proto.HdrReply, reply)
	fctx, cancel := context.WithTimeout(ctx, c.ping/2)
	defer cancel()
	r, err := c.nc.RequestMsgWithContext(fctx, fm)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, errNotHeld
	case errors.Is(err, context.DeadlineExceeded):
		if ctx.Err() != nil {
			return nil, nil // our own deadline: the main loop reports it
		}
		return nil, errNotHeld
	case err != nil:
		return nil, transportError(err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		return nil, e
	}
	switch r.Header.Get(proto.HdrStatus) {
	case proto.StatusWorking:
		return r, nil
	case proto.StatusQueued:
		return nil, errMaybeHeld
	}
	return nil, errNotHeld
}

// findQueued asks the brokers whether the queue stream still holds the
// request with sequence seq and reply subject reply (FIND on the call
// subject). An unanswered FIND is errNotHeld, a miss like any other.
func (c *Client) findQueued(ctx context.Context, svc proto.Service, seq, reply string) (bool, error) {
	fm := nats.NewMsg(proto.CallSubject(svc))
	fm.Header.Set(proto.HdrOp, proto.OpFind)
	fm.Header.Set(proto.HdrSeq, seq)
	fm.Header.Set(proto.HdrReply, reply)
	fctx, cancel := context.WithTimeout(ctx, c.ping)
	defer cancel()
	r, err := c.nc.RequestMsgWithContext(fctx, fm)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return false, errNotHeld
	case errors.Is(err, context.DeadlineExceeded):
		if ctx.Err() != nil {
			return true, nil // our own deadline: the main loop reports it
		}
		return false, errNotHeld
	case err != nil:
		return false, transportError(err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		if e.Code == proto.CodeNoConversation {
			return false, nil
		}
		return false, errNotHeld // the broker cannot tell now: a miss
	}
	return r.Header.Get(proto.HdrStatus) == proto.StatusQueued, nil
}

// cancelHeld tells the replica holding the request with reply subject
// reply that its caller gave up (CANCEL on the held subject). It does not
// wait: the caller is going. Closing the connection flushes it.
func (c *Client) cancelHeld(held, reply string) {
	cm := nats.NewMsg(held)
	cm.Header.Set(proto.HdrOp, proto.OpCancel)
	cm.Header.Set(proto.HdrReply, reply)
	_ = c.nc.PublishMsg(cm)
}

// pingReplica checks that the replica (and conversation) still exist. It
// returns nats.ErrTimeout for a ping that got no answer in time.
func (c *Client) pingReplica(ctx context.Context, w watch) error {
	pm := nats.NewMsg(proto.ReplicaSubject(w.replica))
	pm.Header.Set(proto.HdrOp, proto.OpPing)
	if w.conv != "" {
		pm.Header.Set(proto.HdrConv, w.conv)
	}
	pctx, cancel := context.WithTimeout(ctx, c.ping)
	defer cancel()
	r, err := c.nc.RequestMsgWithContext(pctx, pm)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return proto.Errorf(proto.CodeLoggedOff, "replica %s is gone", w.replica)
	case errors.Is(err, context.DeadlineExceeded):
		if ctx.Err() != nil {
			return nil // our own deadline: the main loop reports it
		}
		return nats.ErrTimeout
	case err != nil:
		return transportError(err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		return e
	}
	return nil
}

func (c *Client) checkSize(m *nats.Msg) error {
	if max := c.maxPayload - 1024; int64(len(m.Data)) > max {
		return proto.Errorf(proto.CodePayloadTooBig, "payload of %d bytes exceeds the limit of %d", len(m.Data), max)
	}
	return nil
}

// transportError reports a NATS error as a *proto.Error with err as its
// Cause: 0900/0002 for a payload over the server's limit, else 0215/0148.
func transportError(err error) *proto.Error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return proto.Errorf(proto.CodePayloadTooBig, "%w", err)
	}
	return proto.Errorf(proto.CodeBrokerNotActive, "%w", err)
}
