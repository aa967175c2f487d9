package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
)

// onCall queues one request (see proto.CallPrefix), answering to its own
// reply subject. A Muster-Reply header is refused there: only a replica's
// forward (onForward) may name another reply subject.
func (b *Broker) onCall(m *nats.Msg) {
	if m.Header.Get(proto.HdrOp) == proto.OpFind {
		b.onFind(m)
		return
	}
	if m.Header.Get(proto.HdrReply) != "" {
		if m.Reply != "" {
			b.replyError(m.Reply, proto.Errorf(proto.CodeBadRequest, "%s is only honoured on %sC.N.S (a replica's forward)", proto.HdrReply, proto.ForwardPrefix))
		}
		return
	}
	b.entry(m, m.Reply, proto.CallSubject)
}

// onForward queues a warm request a full replica handed over (see
// proto.ForwardPrefix): the caller's reply subject is in Muster-Reply, and
// the broker acknowledges the forward itself, so the replica learns if no
// broker took it.
func (b *Broker) onForward(m *nats.Msg) {
	replyTo := m.Header.Get(proto.HdrReply)
	if replyTo == "" {
		if m.Reply != "" {
			b.replyError(m.Reply, proto.Errorf(proto.CodeBadRequest, "a forward needs %s", proto.HdrReply))
		}
		return
	}
	defer func() { _ = m.Respond(nil) }()
	b.entry(m, replyTo, proto.ForwardSubject)
}

// entry queues request m, whose answers go to replyTo; subject says which
// entry subject m must have been sent to.
func (b *Broker) entry(m *nats.Msg, replyTo string, subject func(proto.Service) string) {
	if replyTo == "" {
		b.log.Warn("request without reply subject dropped", "subject", m.Subject)
		return
	}
	if !b.routines.enter() {
		b.replyShuttingDown(replyTo)
		return
	}
	defer b.routines.leave()
	svc, err := proto.ServiceFromTokens(m.Subject)
	if err != nil || m.Subject != subject(svc) {
		b.replyError(replyTo, proto.Errorf(proto.CodeBadRequest, "subject %q: want %sCLASS.NAME.SERVICE", m.Subject, strings.TrimSuffix(subject(proto.Service{Class: "C", Name: "N", Service: "S"}), "C.N.S")))
		return
	}
	op, err := proto.ParseOp(m.Header)
	if err == nil && op != proto.OpCall && op != proto.OpNew {
		err = fmt.Errorf("%s %s is sent to the replica subject, not queued", proto.HdrOp, op)
	}
	now := time.Now()
	dl := time.Time{}
	if err == nil {
		dl, err = proto.ParseDeadline(m.Header, now)
	}
	if err != nil {
		b.replyError(replyTo, proto.Errorf(proto.CodeBadRequest, "%v", err))
		return
	}
	if dl.IsZero() {
		dl = now.Add(b.cfg.DefaultTimeout)
	}
	if !dl.After(now) {
		b.replyError(replyTo, proto.Errorf(proto.CodeWaitTimeout, "deadline passed before the request was queued"))
		return
	}
	if ahead := dl.Sub(now); ahead > maxAhead {
		b.replyError(replyTo, proto.Errorf(proto.CodeBadRequest, "deadline %s ahead: the broker queues requests for at most %s (set %s or %s nearer)",
			ahead.Round(time.Second), maxAhead, proto.HdrDeadline, proto.HdrTimeout))
		return
	}
	live, attachable := b.reg.known(svc.String(), now)
	if live == 0 && !attachable {
		// Maybe a replica registered a moment ago, or the view is stale:
		// make sure before saying no, off this callback so other calls do
		// not wait for it.
		if !b.routines.start(func() {
			ctx, cancel := context.WithTimeout(b.runCtx, syncWait)
			err := b.reg.sync(ctx)
			cancel()
			b.decide(m, svc, replyTo, dl, err == nil)
		}) {
			b.replyShuttingDown(replyTo)
		}
		return
	}
	b.decide(m, svc, replyTo, dl, true)
}

// onFind answers a caller that lost its connection while its request
// waited in the queue and asks whether it still does: FIND on
// muster.call.C.N.S with the request's Muster-Seq (from the "queued"
// status) and Muster-Reply. The answer, to the FIND's own reply subject,
// is status "queued" while the stream holds that request, else 0003/0003:
// a replica took it (or it expired).
func (b *Broker) onFind(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	if !b.routines.enter() {
		b.replyShuttingDown(m.Reply)
		return
	}
	defer b.routines.leave()
	svc, err := proto.ServiceFromTokens(m.Subject)
	seq, serr := strconv.ParseUint(m.Header.Get(proto.HdrSeq), 10, 64)
	reply := m.Header.Get(proto.HdrReply)
	if err != nil || serr != nil || seq == 0 || reply == "" {
		b.replyError(m.Reply, proto.Errorf(proto.CodeBadRequest, "FIND on %s: want %s (a queue sequence) and %s", proto.CallPrefix+"C.N.S", proto.HdrSeq, proto.HdrReply))
		return
	}
	ctx, cancel := context.WithTimeout(b.runCtx, 2*time.Second)
	defer cancel()
	raw, err := b.queue.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		b.replyError(m.Reply, proto.Errorf(proto.CodeUnavailable, "queue not readable: %v", err))
		return
	case raw.Subject == proto.QueueSubject(svc) && raw.Header.Get(proto.HdrReply) == reply:
		st := nats.NewMsg(m.Reply)
		st.Header.Set(proto.HdrStatus, proto.StatusQueued)
		_ = b.nc.PublishMsg(st)
		return
	}
	b.replyError(m.Reply, proto.Errorf(proto.CodeNoConversation, "request %d is not in the queue: a replica took it, or it expired", seq))
}

// maxAhead is the farthest deadline the broker accepts: the queue stream
// keeps a request 24 h at most (its MaxAge), so a later deadline could not
// be honoured.
const maxAhead = 24 * time.Hour

// syncWait is how long the broker waits for its registry to catch up
// before it answers 0007/0007.
const syncWait = 250 * time.Millisecond

// turnAwayFailing answers 0900/0004 when every manager offering svc
// reports it failing, and reports whether it did. The view says so first;
// the bucket has the last word (stillFailing: a reset may have cleared it
// a moment ago).
func (b *Broker) turnAwayFailing(svc proto.Service, replyTo string, now time.Time) bool {
	if _, failing := b.reg.failing(svc.String(), now); !failing {
		return false
	}
	ctx, cancel := context.WithTimeout(b.runCtx, syncWait)
	why, failing := b.reg.stillFailing(ctx, svc.String(), now)
	cancel()
	if !failing {
		return false
	}
	b.replyError(replyTo, proto.Errorf(proto.CodeServiceFailing, "service %s cannot start: %s", svc, why))
	b.probeFailing(svc, now)
	return true
}

// decide answers 0007/0007 or 0900/0004 when nothing can serve svc, and
// queues the request otherwise. synced says the registry was found caught
// up: without it the broker never answers 0007/0007 but queues (fail
// open), for the view may miss the attach manager or replica that serves
// svc.
func (b *Broker) decide(m *nats.Msg, svc proto.Service, replyTo string, dl time.Time, synced bool) {
	now := time.Now()
	live, attachable := b.reg.known(svc.String(), now)
	if live == 0 && !attachable {
		if synced {
			b.replyError(replyTo, proto.Errorf(proto.CodeNotRegistered, "service %s: no replica registered and no attach manager offers it", svc))
			return
		}
		b.log.Debug("registry not current: queueing a request for a service it does not know", "service", svc.String())
	}
	if live == 0 && b.turnAwayFailing(svc, replyTo, now) {
		return
	}
	ctx, cancel := context.WithTimeout(b.runCtx, 5*time.Second)
	defer cancel()
	ack, err := b.js.PublishMsg(ctx, queued(m, svc, replyTo, dl, now))
	if dupInProcess(err) {
		// A repeat (Muster-Once) of a request whose first copy a publish
		// (this broker's or another's) is still storing: that one answers,
		// and if its broker dies the caller sends it again.
		return
	}
	if err != nil {
		b.replyError(replyTo, b.queueError(err))
		return
	}
	if m.Header.Get(proto.HdrProgress) == "1" {
		st := nats.NewMsg(replyTo)
		st.Header.Set(proto.HdrStatus, proto.StatusQueued)
		st.Header.Set(proto.HdrSeq, strconv.FormatUint(ack.Sequence, 10))
		_ = b.nc.PublishMsg(st)
	}
	if ack.Duplicate {
		// A caller's repeat (Muster-Once) of a request the stream holds or
		// held: counted and notified when it was first queued.
		return
	}
	b.mu.Lock()
	st := b.stateLocked(svc)
	if !st.consumer {
		st.consumer = b.routines.start(func() { b.syncConsumer(svc) })
	}
	st.stats.TotalRequests++
	if live > 0 {
		st.stats.ServerOccupied++
	}
	lead := b.Leading()
	if lead {
		b.waitingLocked(st, time.Now())
		b.scheduleLocked(svc, st)
	}
	b.mu.Unlock()
	if !lead {
		b.hint(svc) // the leader notifies
	}
}

// queued is the copy of request m stored in the queue stream: the caller's
// headers and body, where to reply, the absolute deadline, when it was
// queued, and a TTL so the stream drops it when the caller gives up.
func queued(m *nats.Msg, svc proto.Service, replyTo string, dl, now time.Time) *nats.Msg {
	q := nats.NewMsg(proto.QueueSubject(svc))
	q.Data = m.Data
	for k, v := range m.Header {
		if !strings.HasPrefix(k, "Nats-") { // JetStream would act on Nats-Msg-Id, Nats-Expected-…
			q.Header[k] = v
		}
	}
	q.Header.Set(proto.HdrReply, replyTo)
	if m.Header.Get(proto.HdrOnce) == "1" {
		q.Header.Set(jetstream.MsgIDHeader, replyTo) // a repeat within DedupWindow is not queued again
	}
	q.Header.Set(proto.HdrDeadline, proto.FormatDeadline(dl))
	q.Header.Del(proto.HdrTimeout)
	q.Header.Set(proto.HdrEnqueued, proto.FormatDeadline(now))
	ttl := dl.Sub(now).Truncate(time.Second) + time.Second // expire with the caller, never before
	q.Header.Set(jetstream.MsgTTLHeader, ttl.String())
	return q
}

// pending counts the queued requests of svc.
func (b *Broker) pending(ctx context.Context, svc proto.Service) (int, error) {
	all, err := b.pendingFiltered(ctx, proto.QueueSubject(svc))
	if err != nil {
		return 0, err
	}
	return all[svc], nil
}

// pendingAll counts queued requests per service.
func (b *Broker) pendingAll(ctx context.Context) (map[proto.Service]int, error) {
	return b.pendingFiltered(ctx, proto.QueuePrefix+">")
}

func (b *Broker) pendingFiltered(ctx context.Context, filter string) (map[proto.Service]int, error) {
	info, err := b.queue.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("broker: queue info: %w", err)
	}
	out := map[proto.Service]int{}
	for subj, n := range info.State.Subjects {
		if svc, err := proto.ServiceFromTokens(subj); err == nil {
			out[svc] = int(n)
		}
	}
	return out, nil
}

// syncConsumer creates svc's queue consumer or brings it up to date, once
// per broker run, when the broker first queues work for svc (off the
// request's path). Replicas only look their consumer up, creating it when
// it is missing: a look-up costs their cold start far less than a create
// or update. A failure is logged and not retried in this run (replicas
// still create a missing consumer; the next broker run tries again).
func (b *Broker) syncConsumer(svc proto.Service) {
	ctx, cancel := context.WithTimeout(b.runCtx, 5*time.Second)
	defer cancel()
	if _, err := streams.QueueConsumer(ctx, b.queue, svc); err != nil && b.runCtx.Err() == nil {
		b.log.Warn("queue consumer not brought up to date", "service", svc.String(), "err", err)
	}
}

// failQueued answers every queued request of svc with e and removes it:
// the service cannot start, so waiting to the deadline helps nobody.
func (b *Broker) failQueued(ctx context.Context, svc proto.Service, e *proto.Error) {
	cons, err := streams.QueueConsumer(ctx, b.queue, svc) // replicas that never started never made it
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return
		}
		n := 0
		for m := range batch.Messages() {
			n++
			b.replyError(m.Headers().Get(proto.HdrReply), e)
			_ = m.Term()
			b.mu.Lock()
			b.stateLocked(svc).stats.Failed++
			b.mu.Unlock()
		}
		if n == 0 {
			return
		}
	}
}

// queueError is the answer to a request whose publish to the queue stream
// failed: CodeUnavailable (retry) when NATS or JetStream cannot take it now
// (no responder, timeout, disconnected, JetStream not ready, queue full);
// CodePayloadTooBig when the queued copy is too large; CodeBrokerNotActive,
// logged, when the queue stream refuses it for a reason a retry does not
// cure (its configuration).
func (b *Broker) queueError(err error) *proto.Error {
	var api *jetstream.APIError
	isAPI := errors.As(err, &api)
	switch {
	case errors.Is(err, nats.ErrMaxPayload),
		isAPI && (api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum || api.ErrorCode == jsErrHeaderTooBig):
		return proto.Errorf(proto.CodePayloadTooBig, "request too big to queue (headers and body, with the %d bytes the broker adds): %w", queuedOverhead, err)
	case isAPI && api.ErrorCode == jsErrStoreFailed:
		return proto.Errorf(proto.CodeUnavailable, "queue full, retry later: %w", err)
	case isAPI && api.Code >= 500,
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected):
		return proto.Errorf(proto.CodeUnavailable, "JetStream unavailable, retry: %w", err)
	}
	if last := b.lastQueueErrLog.Load(); time.Since(time.Unix(0, last)) >= time.Minute && b.lastQueueErrLog.CompareAndSwap(last, time.Now().UnixNano()) {
		b.log.Error("the queue stream refuses requests (check its configuration, e.g. allow_msg_ttl)", "stream", proto.QueueStream, "err", err)
	}
	return proto.Errorf(proto.CodeBrokerNotActive, "cannot queue the request: %w", err)
}

// JetStream error codes nats.go names no constant for.
const (
	jsErrHeaderTooBig = 10097 // header size exceeds maximum allowed of 64k
	jsErrStoreFailed  = 10077 // store failed: maximum bytes or messages exceeded (the queue is full)
	jsErrDupInProcess = 10158 // duplicate message id is in process (a clustered stream still storing the first copy)
)

// dupInProcess reports whether err says the stream is still storing
// another message with the same Nats-Msg-Id.
func dupInProcess(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jsErrDupInProcess
}

// queuedOverhead is about how many bytes the queued copy carries beyond
// the request's own headers and body, besides the reply subject.
const queuedOverhead = 110

// replyError sends e to the reply subject to, if there is one.
func (b *Broker) replyError(to string, e *proto.Error) {
	if to == "" {
		return
	}
	m := nats.NewMsg(to)
	proto.SetError(m.Header, e)
	_ = b.nc.PublishMsg(m)
}

// replyShuttingDown answers a request that reached the broker after
// Shutdown stopped taking work (only when draining ran out of time).
func (b *Broker) replyShuttingDown(to string) {
	b.replyError(to, proto.Errorf(proto.CodeBrokerNotActive, "broker %s is shutting down", b.cfg.ID))
}
