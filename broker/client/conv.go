package client

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Conv is an open conversation with one replica. Its methods are not safe
// for concurrent use: a conversation is one exchange at a time.
//
// End or Cancel a conversation when done with it. One that is dropped
// without either is forgotten by the client once the garbage collector
// finds it unreachable; its keepalives stop then, and its replica ends its
// side 3 keepalives later (0003/0012), or without keepalives at the
// conversation timeout (CONV-NONACT), holding a slot until then.
type Conv struct {
	c       *Client
	svc     proto.Service
	id      string
	replica string
	subject string         // the replica's private subject
	token   string         // event inbox token (a waiter of c)
	events  chan *nats.Msg // events on it, "ended" being the last
	ka      *keepalive     // nil without keepalives
	// The conversation's messages ask for their replies on its event
	// token too, so a message costs no waiter of its own and the replica
	// answers to a subject it has used before (the NATS server caches its
	// permission check per subject). busy is held by the exchange using
	// it; fresh is set after an exchange that failed (a late reply to it
	// could still come there), and from then on every message gets a new
	// token, as a concurrent exchange does.
	busy    atomic.Bool
	fresh   atomic.Bool
	waiting atomic.Int32 // exchanges waiting for their reply (end wakes them)
	// msg is the message the holder of busy sends, reused with its
	// header; dl is the deadline its header holds (formatted once per
	// deadline, not per message).
	msg *nats.Msg
	dl  time.Time
	// bare: the replica routes this conversation's OLDs by their reply
	// subject (it said Muster-Bare: 1 to the NEW), so the reused OLD goes
	// with no headers at all (bareMsg); EOC, CANCEL and the OLDs of a
	// fresh token keep theirs.
	bare    bool
	bareMsg *nats.Msg

	mu    sync.Mutex
	ended *proto.Error
}

// Open starts a conversation (NEW) with data as its first message and
// returns it with the replica's first reply. If the replica ended the
// conversation with that reply, the Conv is already Ended.
func (c *Client) Open(ctx context.Context, service string, data []byte) (_ *Conv, _ []byte, retErr error) {
	svc, err := c.service(service)
	if err != nil {
		return nil, nil, err
	}
	w := watch{}
	if t := c.defaultDeadline(ctx, &w); t != nil {
		defer stopDeadline(t)
	}
	token, notify, events, err := c.registerConv()
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if retErr != nil {
			c.unregister(token)
		}
	}()
	var r *nats.Msg
	if c.keepalive == proto.BareNewKeepalive && c.ping <= proto.BareNewKeepalive && svc.bareNewOK(c.now.Load()) {
		r, err = c.bareNew(ctx, svc, token, notify, events, data, w)
		if off, fellBack := bareNewFallback(err, c.now.Load()); fellBack {
			// Nobody got it: with headers, to the warm subject and on
			// (older replicas there too). What the attempt may still
			// bring to the event token (a refusal of another Open's bare
			// NEW, which the server reports by subject; a nudge) is not
			// an event.
			svc.bareNewOff.Store(off)
			c.quiet(token, events)
			r, err = nil, nil
		}
	}
	if r == nil && err == nil {
		m := &nats.Msg{Data: data, Header: nats.Header{}}
		m.Header.Set(proto.HdrOp, proto.OpNew)
		m.Header.Set(proto.HdrNotify, notify)
		if c.keepalive > 0 {
			m.Header.Set(proto.HdrKeepalive, c.keepaliveHdr)
		}
		m.Header[proto.HdrBareReplies] = bareRepliesValue
		w.events = events
		r, err = c.request(ctx, svc, m, w)
	}
	if err != nil {
		return nil, nil, err
	}
	cv := &Conv{c: c, svc: svc.svc, token: token, events: events}
	if r.Header == nil {
		// A bare reply (Muster-Bare-Replies): its reply subject names the
		// replica and the conversation, whose OLDs go bare.
		var ok bool
		if cv.replica, cv.id, ok = proto.ParseConvReply(r.Reply); !ok {
			return nil, nil, proto.Errorf(proto.CodeBadRequest, "bare reply to NEW with reply subject %q: want %s<replica>.<conversation>", r.Reply, proto.ReplicaPrefix)
		}
		cv.bare = true
		svc.bareNewSeen.Store(true) // a replica that takes bare NEWs too
		if tr := traceOf(ctx); tr != nil && tr.Replica == "" {
			tr.Replica = cv.replica
		}
	} else {
		cv.id, cv.replica, cv.bare = r.Header.Get(proto.HdrConv), r.Header.Get(proto.HdrReplica), r.Header.Get(proto.HdrBare) == "1"
		if proto.ValidID(cv.id) != nil || proto.ValidID(cv.replica) != nil {
			return nil, nil, proto.Errorf(proto.CodeBadRequest, "reply to NEW lacks valid %s/%s headers", proto.HdrConv, proto.HdrReplica)
		}
	}
	cv.subject = proto.ReplicaSubject(cv.replica)
	// An abandoned Conv must not keep its waiter for ever. The cleanup
	// holds the client and the token, not cv, so cv can become unreachable;
	// its keepalives stop with the waiter.
	runtime.AddCleanup(cv, c.unregister, token)
	if r.Header.Get(proto.HdrStatus) == proto.StatusEOC {
		cv.end(proto.ErrEOC)
	} else if c.keepalive > 0 {
		cv.ka = &keepalive{subject: proto.ReplicaSubject(cv.replica), conv: cv.id}
		cv.ka.last.Store(time.Now().UnixNano())
		c.keepAlive(token, cv.ka)
	}
	return cv, r.Data, nil
}

// bareNew sends a conversation's NEW bare (PROTOCOL §6.4, "Bare NEW"): no
// headers, to the service's NEW subject, with the event subject notify as
// its reply subject. It is what Open sends once a replica of the service
// answered a NEW bare (its version takes bare NEWs) and while the client's
// keepalive is the one a bare NEW stands for. Its reply comes on the
// event token, as an OLD's does. Like a bare CALL it carries no deadline
// (the client keeps it and cancels the NEW at the replica when it passes)
// and asks for no statuses (the client asks who holds it by FIND). A 503
// (no free replica takes bare NEWs: all full, or older) is for Open to
// answer with the NEW with headers; the token has seen no other message.
func (c *Client) bareNew(ctx context.Context, svc *svcNames, token, notify string, events chan *nats.Msg, data []byte, w watch) (*nats.Msg, error) {
	if !c.rearm(token, svc.newSubj) {
		return nil, closedError()
	}
	w.svc, w.find, w.bare = svc.svc, true, true
	w.token, w.reply, w.ch, w.events = token, notify, events, nil
	r, err := c.roundTrip(ctx, &nats.Msg{Subject: svc.newSubj, Data: data}, w)
	if err != nil {
		return nil, err
	}
	if isDenied(r) {
		return nil, errBareNewRefused // the server refused the publish (denied.go)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		return nil, e // the replica's (a handler's 0900/0006 included): the NEW ran
	}
	return r, nil
}

// bareNewFallback reports whether a bare NEW that ended with err reached
// nobody, so that Open sends it with headers, and until when (the
// client's coarse clock) NEWs then go with headers: a while after a 503
// (no free replica takes bare NEWs now), for good after a refusal.
func bareNewFallback(err error, now int64) (off int64, fellBack bool) {
	switch {
	case errors.Is(err, errNoResponders):
		return now + int64(bareNewBackoff), true
	case errors.Is(err, errBareNewRefused):
		return math.MaxInt64, true // credentials from before bare NEWs
	}
	return 0, false
}

// errBareNewRefused is a bare NEW the server refused to publish: the
// client's credentials predate the grant on muster.new.>.
var errBareNewRefused = errors.New("client: bare NEW refused by the server")

// quiet makes the event token's waiter, after a bare NEW nobody got,
// what registerConv made it: no subject for refusals to match, no nudge,
// nothing in its channel.
func (c *Client) quiet(token string, events chan *nats.Msg) {
	c.mu.Lock()
	if w, ok := c.waiters[token]; ok {
		w.subject, w.wake = "", 0
		c.waiters[token] = w
	}
	c.mu.Unlock()
	for len(events) > 0 {
		<-events
	}
}

// bareNewBackoff is how long a client sends NEWs with headers after a bare
// one found no replica that takes them.
const bareNewBackoff = time.Second

// bareRepliesValue is Muster-Bare-Replies: 1, shared by every NEW (nats.go
// only reads it).
var bareRepliesValue = []string{"1"}

// ID returns the conversation id.
func (cv *Conv) ID() string { return cv.id }

// Replica returns the id of the replica serving the conversation.
func (cv *Conv) Replica() string { return cv.replica }

// Ended returns why the conversation ended, or nil while it is open.
func (cv *Conv) Ended() error {
	cv.mu.Lock()
	defer cv.mu.Unlock()
	cv.pollEventsLocked()
	if cv.ended == nil {
		return nil
	}
	return cv.ended
}

// Send sends the next message (OLD) and returns the replica's reply. After
// the conversation ended it returns why: proto.ErrAfterEOC after a normal
// end, else the code that ended it (0003/0073 timeout, 0003/0010 replica
// deregistered, 0003/0012 replica gone, ErrClosed after Close …).
func (cv *Conv) Send(ctx context.Context, data []byte) ([]byte, error) {
	if err := cv.usable(); err != nil {
		return nil, err
	}
	w := watch{replica: cv.replica, conv: cv.id, events: cv.events}
	if t := cv.c.defaultDeadline(ctx, &w); t != nil {
		defer stopDeadline(t)
	}
	r, err := cv.exchange(ctx, proto.OpOld, data, w)
	if err != nil {
		return nil, err
	}
	if proto.IsEOCReply(r.Reply, cv.id) || r.Header.Get(proto.HdrStatus) == proto.StatusEOC {
		cv.end(proto.ErrEOC) // a bare ending reply (Muster-Bare-Replies), or one with headers
	}
	return r.Data, nil
}

// End ends the conversation from the client's side (EOC). Ending a
// conversation the replica already ended normally is not an error.
func (cv *Conv) End(ctx context.Context) error { return cv.close(ctx, proto.OpEOC, proto.ErrEOC) }

// Cancel aborts the conversation; the replica's handler sees
// proto.ErrCancelled. A Send or End another goroutine is waiting in on
// this conversation returns proto.ErrCancelled at once (the replica
// answers no message of a cancelled conversation).
func (cv *Conv) Cancel(ctx context.Context) error {
	return cv.close(ctx, proto.OpCancel, proto.ErrCancelled)
}

func (cv *Conv) close(ctx context.Context, op string, reason *proto.Error) error {
	cv.mu.Lock()
	cv.pollEventsLocked()
	ended := cv.ended
	cv.mu.Unlock()
	if ended == proto.ErrEOC {
		return nil
	}
	if ended != nil {
		return ended
	}
	w := watch{replica: cv.replica, conv: cv.id, events: cv.events}
	if t := cv.c.defaultDeadline(ctx, &w); t != nil {
		defer stopDeadline(t)
	}
	_, err := cv.exchange(ctx, op, nil, w)
	cv.end(reason)
	if errors.Is(err, proto.ErrEOC) && op == proto.OpEOC {
		return nil // the replica ended it first: ending it is done either way
	}
	return err
}

// exchange sends one message to the replica's private subject and waits
// for the answer, watching the replica's liveness and conversation events.
// w names the replica, the conversation and its events, and the client's
// default deadline when ctx has none (defaultDeadline).
func (cv *Conv) exchange(ctx context.Context, op string, data []byte, w watch) (*nats.Msg, error) {
	if cv.ka != nil {
		cv.ka.last.Store(time.Now().UnixNano()) // this message keeps it alive too
	}
	var m *nats.Msg
	if !cv.fresh.Load() && cv.busy.CompareAndSwap(false, true) {
		defer cv.busy.Store(false)
		if !cv.c.rearm(cv.token, cv.subject) {
			// The waiter is gone: the conversation ended (its event is
			// waiting to be read) or the client closed.
			if err := cv.usable(); err != nil {
				return nil, err
			}
			return nil, closedError()
		}
		// Its events come on the same channel: a reply is what comes
		// first, an "ended" event an error reply.
		w.token, w.ch, w.events = cv.token, cv.events, nil
		m = cv.reuseMsg(ctx, op, data, w.dl)
		w.dlSet, w.reply = true, m.Reply
		defer func() { m.Data = nil }() // hold no caller's data
	} else {
		m = &nats.Msg{Subject: cv.subject, Data: data, Header: nats.Header{}}
		m.Header.Set(proto.HdrOp, op)
		m.Header.Set(proto.HdrConv, cv.id)
	}
	cv.waiting.Add(1)
	r, err := cv.c.roundTrip(ctx, m, w)
	cv.waiting.Add(-1)
	if err != nil && w.token != "" {
		cv.fresh.Store(true) // a late reply may still come to the event token
	}
	if errors.Is(err, errNoResponders) {
		err = proto.Errorf(proto.CodeLoggedOff, "replica %s is gone", cv.replica)
	}
	if err == nil {
		if e := proto.ErrorFromHeader(r.Header); e != nil {
			err = e
		}
	}
	if err != nil {
		var e *proto.Error
		if errors.As(err, &e) && e.Code != proto.CodeWaitTimeout {
			cv.end(e) // any coded error from the replica's side ends the conversation
		}
		return nil, err
	}
	return r, nil
}

// reuseMsg readies the conversation's own message (the caller holds
// busy) for op with data and the deadline dl (ctx's when zero). Its
// header values are its own, so they are written in place. A bare OLD is
// a message of its own, with no headers.
func (cv *Conv) reuseMsg(ctx context.Context, op string, data []byte, dl time.Time) *nats.Msg {
	if cv.bare && op == proto.OpOld {
		// No deadline either: the client keeps it, as for a bare call.
		if cv.bareMsg == nil {
			cv.bareMsg = &nats.Msg{Subject: cv.subject, Reply: cv.c.prefix + cv.token}
		}
		cv.bareMsg.Data = data
		return cv.bareMsg
	}
	if dl.IsZero() {
		dl, _ = ctx.Deadline()
	}
	if cv.msg == nil {
		cv.msg = &nats.Msg{Subject: cv.subject, Reply: cv.c.prefix + cv.token, Header: nats.Header{
			proto.HdrOp: {op}, proto.HdrConv: {cv.id}, proto.HdrDeadline: {proto.FormatDeadline(dl)},
		}}
		cv.dl = dl
	}
	m := cv.msg
	m.Header[proto.HdrOp][0] = op
	if !dl.Equal(cv.dl) {
		m.Header[proto.HdrDeadline][0] = proto.FormatDeadline(dl)
		cv.dl = dl
	}
	m.Data = data
	return m
}

// usable returns the error a Send on an ended conversation gets.
func (cv *Conv) usable() error {
	cv.mu.Lock()
	defer cv.mu.Unlock()
	cv.pollEventsLocked()
	switch cv.ended {
	case nil:
		return nil
	case proto.ErrEOC:
		return proto.ErrAfterEOC
	default:
		return cv.ended
	}
}

// pollEventsLocked applies conversation-ended events that arrived while
// the client was not waiting, then the client's Close.
func (cv *Conv) pollEventsLocked() {
	for drained := false; !drained; {
		select {
		case ev := <-cv.events:
			if e := proto.ErrorFromHeader(ev.Header); e != nil && cv.ended == nil {
				cv.ended = e
				if e.Code == proto.CodeEOC {
					cv.ended = proto.ErrEOC
				}
			}
		default:
			drained = true
		}
	}
	if cv.ended == nil {
		select {
		case <-cv.c.done:
			cv.ended = closedError()
		default:
		}
	}
}

func (cv *Conv) end(e *proto.Error) {
	cv.mu.Lock()
	defer cv.mu.Unlock()
	if cv.ended == nil {
		if e.Code == proto.CodeEOC {
			e = proto.ErrEOC
		}
		cv.ended = e
	}
	cv.c.unregister(cv.token)
	if cv.waiting.Load() == 0 {
		return
	}
	// A Send or End of another goroutine waits on the event channel (the
	// reply channel of an exchange on the event token, or watched by one
	// on a fresh token), which nothing reaches now: it ends with e (CANCEL
	// answers no message the replica had not answered). Should it return
	// before it reads this, the next look at the events drains it.
	m := &nats.Msg{Header: nats.Header{}}
	proto.SetError(m.Header, cv.ended)
	select {
	case cv.events <- m:
	default:
	}
}
