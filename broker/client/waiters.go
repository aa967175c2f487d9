package client

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// The client has one wildcard reply inbox. Each request in flight, and each
// open conversation's event subject, is a token under it with a waiter: a
// channel that dispatch hands the messages for that token to. A request's
// waiter is removed when its round trip ends; a conversation's when it
// ends (End, Cancel, an error, or the replica's "ended" event), or when
// the garbage collector finds the *Conv abandoned (conv.go); all of them
// at Close.
//
// One sweeper goroutine per client serves every waiter, so a fast call
// costs no timer: it nudges a request still unanswered one ping interval
// after it was sent (its round trip then starts asking whether its
// replica lives), and sends the keepalive PINGs of open conversations.

// waiter is one token's entry.
type waiter struct {
	ch      chan *nats.Msg
	subject string     // where the request went: a refused publish there ends it (denied.go)
	wake    int64      // coarse UnixNano at which to nudge the round trip; 0: never
	ka      *keepalive // an open conversation's keepalive; nil for requests
}

// keepalive is what the sweeper needs to keep one conversation alive at
// its replica (Muster-Keepalive): where to PING, and when the client last
// sent anything for it.
type keepalive struct {
	subject, conv string
	last          atomic.Int64 // UnixNano
}

// nudge is the message the sweeper hands a waiter whose request is still
// unanswered after one ping interval. It never leaves the process.
var nudge = &nats.Msg{Subject: "nudge"}

// dispatch hands a message on the reply inbox to its waiter. The send is
// made under c.mu (it never blocks), so once a waiter is removed nothing
// more reaches its channel: a request's channel can be reused (release).
func (c *Client) dispatch(m *nats.Msg) {
	token := m.Subject[len(c.prefix):]
	c.mu.Lock()
	ch := c.waiters[token].ch
	if ch != nil {
		if m.Header.Get(proto.HdrStatus) == proto.StatusEnded {
			delete(c.waiters, token) // a conversation's last event: nothing follows
		}
		select {
		case ch <- m:
		default: // a waiter takes one final message; anything beyond is noise
		}
	} // else a late reply to a request that gave up
	c.mu.Unlock()
}

// waiterChans holds the channels of finished requests for reuse: a call
// then allocates no channel.
var waiterChans = sync.Pool{New: func() any { return make(chan *nats.Msg, 8) }}

// register adds a waiter under a fresh token and returns the token, the
// reply subject (the token is its tail: one string for both) and the
// channel; it fails once the client is closed. With watch, the sweeper
// nudges the waiter once, about one ping interval from now. With bare
// (a bare call), the token may be a spare one (reuseToken); every other
// request, those with Muster-Once among them, gets a fresh one.
func (c *Client) register(watch bool, subject string, bare bool) (token, reply string, ch chan *nats.Msg, err error) {
	if e := c.inboxDenied.Load(); e != nil {
		return "", "", nil, e
	}
	if bare {
		if token, reply, ch, ok := c.reuseToken(watch, subject); ok {
			return token, reply, ch, nil
		}
	}
	return c.registerToken(watch, subject, false)
}

// registerConv is register for a conversation's event token, which is
// also the reply subject of its OLDs and, sent bare, what names the
// conversation to its replica (PROTOCOL §6.4): a secret, as the
// conversation id is. The counter keeps it unique, 128 random bits
// unguessable (the client's inbox prefix is no secret: every replica it
// calls sees it).
func (c *Client) registerConv() (token, reply string, ch chan *nats.Msg, err error) {
	return c.registerToken(false, "", true)
}

func (c *Client) registerToken(watch bool, subject string, secret bool) (token, reply string, ch chan *nats.Msg, err error) {
	if e := c.inboxDenied.Load(); e != nil {
		return "", "", nil, e
	}
	var buf [96]byte
	b := strconv.AppendUint(append(buf[:0], c.prefix...), c.next.Add(1), 36)
	if secret {
		var r [16]byte
		_, _ = rand.Read(r[:]) // never fails (crypto/rand)
		b = base64.RawURLEncoding.AppendEncode(append(b, '-'), r[:])
	}
	reply = string(b)
	token = reply[len(c.prefix):]
	w := waiter{ch: waiterChans.Get().(chan *nats.Msg), subject: subject}
	if watch {
		w.wake = c.now.Load() + int64(c.ping)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		waiterChans.Put(w.ch)
		return "", "", nil, closedError()
	}
	c.waiters[token] = w
	return token, reply, w.ch, nil
}

// spareToken is the token of a bare call that got its reply, kept with
// its reply subject and channel for a later request (recycle).
type spareToken struct {
	token, reply string
	ch           chan *nats.Msg
}

// maxSpare bounds the spare tokens: about the calls a client has in
// flight at once. A request beyond takes a fresh token.
const maxSpare = 64

// reuseToken registers a waiter under the token of an earlier bare call
// that got its reply (recycle), the latest first, if there is one. Spare
// tokens only ever carry bare calls: a request with Muster-Once must name
// itself alone by its reply subject (the brokers' duplicate check), so it
// always gets a fresh token, and that token is never kept.
//
// Why reuse: the NATS server caches, per subject, where a message goes
// and (per publishing connection) whether it may go there. A reply
// subject used once misses both caches at every reply: the server matches
// it against its subscriptions and the replica's permissions, stores both
// results and soon prunes them again. A few dozen subjects used over and
// over hit both. Measured with the same client code: about 15% less CPU
// per request and 10% more requests per second (docs/PERFORMANCE.md).
//
// Why it is safe: a bare call's request reaches exactly one replica
// (a queue group; a bare request is never forwarded or queued, the
// replica answers it with a 503 instead) and that replica sends exactly
// one reply, after it freed the call (FIND and CANCEL no longer find it
// there). A token is recycled only when that reply was the first and only
// message its round trip saw: nothing else is on its way to it. A call
// that goes on to the standby subject or a broker does so on another
// token.
func (c *Client) reuseToken(watch bool, subject string) (token, reply string, ch chan *nats.Msg, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.spare)
	if n == 0 || c.closed {
		return "", "", nil, false
	}
	t := c.spare[n-1]
	c.spare[n-1] = spareToken{}
	c.spare = c.spare[:n-1]
	w := waiter{ch: t.ch, subject: subject}
	if watch {
		w.wake = c.now.Load() + int64(c.ping)
	}
	c.waiters[t.token] = w
	return t.token, t.reply, t.ch, true
}

// recycle is release for the waiter of a bare call whose reply was the
// only message it got (see reuseToken): its token, reply subject and
// channel are kept for a later request.
func (c *Client) recycle(token, reply string, ch chan *nats.Msg) {
	c.mu.Lock()
	if _, ok := c.waiters[token]; !ok || c.closed || len(c.spare) >= maxSpare {
		c.mu.Unlock()
		c.release(token, ch)
		return
	}
	delete(c.waiters, token)
	for len(ch) > 0 {
		<-ch
	}
	c.spare = append(c.spare, spareToken{token: token, reply: reply, ch: ch})
	c.mu.Unlock()
}

// release removes a request's waiter and keeps its channel for reuse.
// After the removal nothing more is sent to the channel (dispatch, the
// sweeper and denied send under c.mu), so what it holds is drained and
// the channel goes back empty. Only for waiters that nobody else holds
// (not a conversation's event token).
func (c *Client) release(token string, ch chan *nats.Msg) {
	c.unregister(token)
	for len(ch) > 0 {
		<-ch
	}
	waiterChans.Put(ch)
}

// keepAlive makes the sweeper keep the conversation with event token
// alive at its replica.
func (c *Client) keepAlive(token string, ka *keepalive) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.waiters[token]; ok {
		w.ka = ka
		c.waiters[token] = w
	}
}

// rearm readies the waiter of a conversation's event token for the reply
// to a message sent to subject: the sweeper nudges it one ping interval
// from now, a refused publish to subject ends it, and what the channel
// holds that is not an event (a nudge from an earlier exchange) is
// dropped. It reports false when the waiter is gone: the conversation
// ended, or the client closed.
func (c *Client) rearm(token, subject string) bool {
	wake := c.now.Load() + int64(c.ping)
	c.mu.Lock()
	w, ok := c.waiters[token]
	if ok {
		w.wake, w.subject = wake, subject
		c.waiters[token] = w
	}
	c.mu.Unlock()
	for ok {
		select {
		case m := <-w.ch:
			if m != nudge {
				select { // an event: it stays for the round trip
				case w.ch <- m:
				default:
				}
				return true
			}
		default:
			return true
		}
	}
	return false
}

// unregister removes the waiter of token, if it is still there.
func (c *Client) unregister(token string) {
	c.mu.Lock()
	delete(c.waiters, token) // a no-op on the nil map of a closed client
	c.mu.Unlock()
}

// sweep runs until Close, every sweepEvery: it nudges waiters whose wake
// time has come (once each) and PINGs every open conversation with a
// keepalive that sent nothing for a keepalive less one sweep. The PINGs
// are plain publishes: the replica answers none, it only notes that the
// client is there.
func (c *Client) sweep() {
	defer close(c.swept)
	defer c.nc.RemoveStatusListener(c.status)
	t := time.NewTicker(c.sweepEvery)
	defer t.Stop()
	var pings []*keepalive
	for {
		select {
		case <-c.done:
			return
		case <-c.status:
			c.cuts.Add(1)
		case now := <-t.C:
			n := now.UnixNano()
			c.now.Store(n)
			due := n - int64(c.keepalive-c.sweepEvery)
			pings = pings[:0]
			c.mu.Lock()
			for token, w := range c.waiters {
				if w.wake != 0 && n >= w.wake {
					select {
					case w.ch <- nudge:
					default:
					}
					w.wake = 0
					c.waiters[token] = w
				}
				if w.ka != nil && w.ka.last.Load() <= due {
					pings = append(pings, w.ka)
				}
			}
			c.mu.Unlock()
			for _, ka := range pings {
				pm := nats.NewMsg(ka.subject)
				pm.Header.Set(proto.HdrOp, proto.OpPing)
				pm.Header.Set(proto.HdrConv, ka.conv)
				if c.nc.PublishMsg(pm) == nil {
					ka.last.Store(n)
				}
			}
			clear(pings) // hold no conversation past this sweep
		}
	}
}
