package client

import (
	"errors"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// A NATS server with permissions (Muster's roles, docs/PROTOCOL.md §12)
// refuses a publish or subscribe the user may not make with an
// asynchronous "Permissions Violation" error; the request itself just
// vanishes. So that such a call fails at once with a coded error rather
// than at its deadline, New chains onAsyncError in front of the
// connection's error handler (which it keeps calling): a refused publish
// ends every request in flight to that subject, a refused reply inbox
// every request of the client, now and later, with 0900/0006.

var deniedRE = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "([^"]+)"`)

type denial struct {
	publish bool
	subject string
	err     *proto.Error
}

// deniedError parses a permissions violation; nil for any other error.
func deniedError(err error) *denial {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	m := deniedRE.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	d := &denial{publish: strings.EqualFold(m[1], "publish"), subject: m[2]}
	verb := "subscribe to"
	if d.publish {
		verb = "publish to"
	}
	d.err = proto.Errorf(proto.CodeNotPermitted, "the NATS server refused to let these credentials %s %s (not allowed by the user's permissions)", verb, d.subject)
	return d
}

// onAsyncError is the connection's error handler while the client lives.
func (c *Client) onAsyncError(nc *nats.Conn, sub *nats.Subscription, err error) {
	if d := deniedError(err); d != nil {
		c.denied(d)
	}
	if c.prevErrHandler != nil {
		c.prevErrHandler(nc, sub, err)
	}
}

// deniedSubject marks the message denied hands a waiter: never a real
// message's subject (those are the client's inbox).
const deniedSubject = "denied"

// isDenied reports whether m is the message denied hands a waiter.
func isDenied(m *nats.Msg) bool { return m != nil && m.Subject == deniedSubject }

// denied ends the requests the server refused.
func (c *Client) denied(d *denial) {
	inbox := !d.publish && d.subject == c.prefix+"*"
	if inbox {
		c.inboxDenied.Store(d.err)
	}
	m := &nats.Msg{Subject: deniedSubject, Header: nats.Header{}}
	proto.SetError(m.Header, d.err)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.waiters {
		if inbox || (d.publish && w.subject == d.subject) {
			select {
			case w.ch <- m:
			default:
			}
		}
	}
}
