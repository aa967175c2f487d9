// Package client is the Go SDK for calling Muster services: one-shot calls
// and conversations (open, send, end, cancel). A call to a free replica is
// one NATS request/reply; when none is free the request goes to the broker,
// which queues it durably until a replica takes it.
//
// Every method honours its context's deadline (WithTimeout sets the default
// when the context has none) and ends in a reply or a *proto.Error, which
// callers test with errors.Is against the proto.Err* values. An error of
// this side (a closed NATS connection, a closed Client, the context) is
// also the *proto.Error's Cause, so errors.Is(err, nats.ErrConnectionClosed)
// or errors.Is(err, ErrClosed) works too.
//
// The files: client.go (Client, New, Close), options.go, waiters.go (the
// reply inbox and who waits on it), roundtrip.go (one request and its
// answer), call.go (Call), conv.go (conversations), errors.go.
package client

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Client calls Muster services over one NATS connection. It is safe for
// concurrent use.
//
// Lock order: Conv.mu before Client.mu (a conversation that ends removes
// its waiter); Client.mu is a leaf.
type Client struct {
	nc      *nats.Conn
	prefix  string // reply inbox prefix; a waiter's token follows it
	sub     *nats.Subscription
	timeout time.Duration
	ping    time.Duration
	// keepalive is what conversations ask for at NEW (Muster-Keepalive;
	// 0: none): the sweeper PINGs each open one at least that often.
	keepalive    time.Duration
	keepaliveHdr string        // keepalive as Muster-Keepalive says it, formatted once
	sweepEvery   time.Duration // the sweeper's period
	now          atomic.Int64  // UnixNano at the last sweep: a clock for waiters that costs no syscall
	swept        chan struct{} // closed when the sweeper has stopped
	// maxPayload is the server's limit, read once: nc.MaxPayload takes the
	// connection's lock, which every publish contends for. A later server
	// with a smaller limit makes the publish fail, reported as 0900/0002.
	maxPayload int64

	// cuts counts the times the connection dropped (DISCONNECTED or
	// RECONNECTING), counted by the sweeper: a request published before a
	// cut may have been lost by the transport, not by its replica.
	cuts   atomic.Uint64
	status chan nats.Status // the connection's status changes, for the sweeper

	// prevErrHandler is the connection's error handler before New
	// chained onAsyncError in front of it; inboxDenied is set when the
	// server refused the reply inbox subscription (every call fails).
	prevErrHandler nats.ErrHandler
	inboxDenied    atomic.Pointer[proto.Error]

	names  sync.Map     // service string → *svcNames: parsed once, not per call
	nNames atomic.Int64 // names stored (at most maxNames)

	next atomic.Uint64 // last waiter token issued
	done chan struct{} // closed by Close

	mu      sync.Mutex
	closed  bool              // guarded by mu
	waiters map[string]waiter // reply token → its waiter; guarded by mu
	spare   []spareToken      // tokens of answered bare calls, for reuse (waiters.go); guarded by mu
}

// DefaultKeepalive is the keepalive a client asks for in its
// conversations: a replica frees the slot of a client that died or lost
// its connection within lostAfter (3) of them, so within 2s.
const DefaultKeepalive = 500 * time.Millisecond

// New creates a client on nc. It subscribes to one wildcard reply inbox;
// Close removes it (nc stays open).
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	c := &Client{nc: nc, timeout: 30 * time.Second, ping: 500 * time.Millisecond, keepalive: DefaultKeepalive,
		done: make(chan struct{}), swept: make(chan struct{}), waiters: map[string]waiter{}}
	for _, o := range opts {
		o(c)
	}
	if c.keepalive > 0 && c.keepalive < proto.MinKeepalive {
		c.keepalive = proto.MinKeepalive
	}
	c.keepaliveHdr = c.keepalive.String()
	c.sweepEvery = max(c.ping/5, time.Millisecond)
	if c.keepalive > 0 {
		c.sweepEvery = min(c.sweepEvery, c.keepalive/5)
	}
	c.maxPayload = nc.MaxPayload()
	c.prefix = nc.NewInbox() + "."
	c.prevErrHandler = nc.ErrorHandler()
	nc.SetErrorHandler(c.onAsyncError)
	sub, err := nc.Subscribe(c.prefix+"*", c.dispatch)
	if err != nil {
		return nil, fmt.Errorf("client: subscribe reply inbox: %w", err)
	}
	c.sub = sub
	// A refused inbox is reported before the PONG: fail now rather than
	// at every call's deadline. (Disconnected: go on, it may come back.)
	if nc.FlushTimeout(c.timeout) == nil {
		if e := deniedError(nc.LastError()); e != nil && e.subject == sub.Subject {
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("client: %w (with Muster's permissions a user connects with inbox prefix _INBOX.<user name>: nats.CustomInboxPrefix)", e.err)
		}
	}
	c.now.Store(time.Now().UnixNano())
	c.status = nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING)
	go c.sweep()
	return c, nil
}

// Close closes the client. Calls and conversation messages waiting for an
// answer return at once with an error for which errors.Is(err, ErrClosed)
// (and proto.ErrBrokerNotActive) holds; every open conversation ends with
// that error, and later calls fail with it. Close unsubscribes the reply
// inbox (nc stays open) and is idempotent. It does not tell the replicas:
// End or Cancel conversations first to free their slots at once, else each
// replica ends its side when their keepalives stop (within 2s with
// DefaultKeepalive), or at its conversation timeout without keepalives.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.waiters = nil
	c.mu.Unlock()
	close(c.done)
	<-c.swept
	err := c.sub.Unsubscribe()
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("client: close: %w", err)
	}
	return nil
}

// closedError is what a method of a closed client returns.
func closedError() *proto.Error {
	return proto.Errorf(proto.CodeBrokerNotActive, "%w", ErrClosed)
}
