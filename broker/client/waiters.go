package client

import (
	"strconv"

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

// dispatch hands a message on the reply inbox to its waiter.
func (c *Client) dispatch(m *nats.Msg) {
	token := m.Subject[len(c.prefix):]
	c.mu.Lock()
	ch := c.waiters[token]
	if ch != nil && m.Header.Get(proto.HdrStatus) == proto.StatusEnded {
		delete(c.waiters, token) // a conversation's last event: nothing follows
	}
	c.mu.Unlock()
	if ch == nil {
		return // a late reply to a request that gave up
	}
	select {
	case ch <- m:
	default: // a waiter takes one final message; anything beyond is noise
	}
}

// register adds a waiter under a fresh token; it fails once the client is
// closed.
func (c *Client) register() (string, chan *nats.Msg, error) {
	token := strconv.FormatUint(c.next.Add(1), 36)
	ch := make(chan *nats.Msg, 8)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", nil, closedError()
	}
	c.waiters[token] = ch
	return token, ch, nil
}

// unregister removes the waiter of token, if it is still there.
func (c *Client) unregister(token string) {
	c.mu.Lock()
	delete(c.waiters, token) // a no-op on the nil map of a closed client
	c.mu.Unlock()
}
