// Package client is the Go SDK for calling Muster services: one-shot calls
// and conversations (open, send, end, cancel). A call to a free replica is
// one NATS request/reply; when none is free the request goes to the broker,
// which queues it durably until a replica takes it.
//
// Every method honours its context's deadline (WithTimeout sets the default
// when the context has none) and ends in a reply or a *proto.Error, which
// callers test with errors.Is against the proto.Err* values.
package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Client calls Muster services over one NATS connection.
type Client struct {
	nc      *nats.Conn
	prefix  string
	sub     *nats.Subscription
	timeout time.Duration
	ping    time.Duration
	// maxPayload is the server's limit, read once: nc.MaxPayload takes the
	// connection's lock, which every publish contends for. A later server
	// with a smaller limit makes the publish fail, reported as 0900/0002.
	maxPayload int64

	next    atomic.Uint64
	mu      sync.Mutex
	waiters map[string]chan *nats.Msg
}

// Option sets an optional knob of New.
type Option func(*Client)

// WithTimeout sets the deadline used when a context has none (default 30s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithPingInterval sets how often a client waiting for a reply checks that
// the replica holding its request is alive (default 500ms). A replica that
// died is reported (0003/0012) within about two intervals.
func WithPingInterval(d time.Duration) Option { return func(c *Client) { c.ping = d } }

// New creates a client on nc. It subscribes to one wildcard reply inbox;
// Close removes it (nc stays open).
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	c := &Client{nc: nc, timeout: 30 * time.Second, ping: 500 * time.Millisecond, waiters: map[string]chan *nats.Msg{}}
	for _, o := range opts {
		o(c)
	}
	c.maxPayload = nc.MaxPayload()
	c.prefix = nc.NewInbox() + "."
	sub, err := nc.Subscribe(c.prefix+"*", c.dispatch)
	if err != nil {
		return nil, fmt.Errorf("client: subscribe reply inbox: %w", err)
	}
	c.sub = sub
	return c, nil
}

// Close unsubscribes the client's reply inbox.
func (c *Client) Close() error { return c.sub.Unsubscribe() }

func (c *Client) dispatch(m *nats.Msg) {
	token := m.Subject[len(c.prefix):]
	c.mu.Lock()
	ch := c.waiters[token]
	c.mu.Unlock()
	if ch == nil {
		return // a late reply to a request that gave up
	}
	select {
	case ch <- m:
	default: // a waiter takes one final message; anything beyond is noise
	}
}

func (c *Client) register() (string, chan *nats.Msg) {
	token := strconv.FormatUint(c.next.Add(1), 36)
	ch := make(chan *nats.Msg, 8)
	c.mu.Lock()
	c.waiters[token] = ch
	c.mu.Unlock()
	return token, ch
}

func (c *Client) unregister(token string) {
	c.mu.Lock()
	delete(c.waiters, token)
	c.mu.Unlock()
}

// errNoResponders marks a NATS 503: nobody subscribed to the subject.
var errNoResponders = errors.New("client: no responders")

// withDeadline gives ctx the client's default deadline if it has none.
func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {} // no derived context on the hot path
	}
	return context.WithTimeout(ctx, c.timeout)
}

// watch is what a waiting request knows about who holds it.
type watch struct {
	replica string         // replica to ping ("" until a "working" status names it)
	conv    string         // conversation id, checked by the ping
	events  chan *nats.Msg // conversation events (nil for calls)
}

// roundTrip publishes m with a fresh reply token and waits for the final
// message: a reply, an error reply, a 503, a conversation event, a dead
// replica or the deadline, whichever comes first.
func (c *Client) roundTrip(ctx context.Context, m *nats.Msg, w watch) (*nats.Msg, error) {
	if err := c.checkSize(m); err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	m.Header.Set(proto.HdrDeadline, proto.FormatDeadline(dl))
	token, ch := c.register()
	defer c.unregister(token)
	m.Reply = c.prefix + token
	if err := c.nc.PublishMsg(m); err != nil {
		return nil, c.transportError(err)
	}
	var tick <-chan time.Time
	var ticker *time.Ticker
	startPing := func() {
		if ticker == nil && w.replica != "" {
			ticker = time.NewTicker(c.ping)
			tick = ticker.C
		}
	}
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	startPing()
	misses := 0
	for {
		select {
		case r := <-ch:
			if r.Header.Get(proto.HdrNATSStatus) == "503" {
				return nil, errNoResponders
			}
			switch r.Header.Get(proto.HdrStatus) {
			case proto.StatusWorking:
				if id := r.Header.Get(proto.HdrReplica); proto.ValidID(id) == nil {
					w.replica = id
					startPing()
				}
				continue
			case proto.StatusQueued:
				continue
			}
			return r, nil
		case ev := <-w.events:
			if e := proto.ErrorFromHeader(ev.Header); e != nil {
				return nil, e
			}
		case <-ctx.Done():
			return nil, proto.Errorf(proto.CodeWaitTimeout, "no reply within the deadline: %v", ctx.Err())
		case <-tick:
			err := c.pingReplica(ctx, w)
			if err == nil {
				misses = 0
				continue
			}
			if errors.Is(err, nats.ErrTimeout) {
				if misses++; misses < 2 {
					continue
				}
				err = proto.Errorf(proto.CodePartnerTimeout, "replica %s does not answer", w.replica)
			}
			select { // a reply that raced the failed ping wins
			case r := <-ch:
				if r.Header.Get(proto.HdrStatus) == "" || r.Header.Get(proto.HdrStatus) == proto.StatusEOC || r.Header.Get(proto.HdrStatus) == proto.StatusError {
					return r, nil
				}
			default:
			}
			return nil, err
		}
	}
}

// pingReplica checks that the replica (and conversation) still exist.
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
		return err
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

func (c *Client) transportError(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return proto.Errorf(proto.CodePayloadTooBig, "%v", err)
	}
	return proto.Errorf(proto.CodeBrokerNotActive, "%v", err)
}

// request sends m to the warm subject of svc and, on no responders, to the
// broker, which queues it. It returns the final reply message.
func (c *Client) request(ctx context.Context, svc proto.Service, m *nats.Msg, w watch) (*nats.Msg, error) {
	m.Subject = proto.WarmSubject(svc)
	m.Header.Set(proto.HdrProgress, "1")
	r, err := c.roundTrip(ctx, m, w)
	if errors.Is(err, errNoResponders) {
		m.Subject = proto.CallSubject(svc)
		r, err = c.roundTrip(ctx, m, w)
		if errors.Is(err, errNoResponders) {
			return nil, proto.Errorf(proto.CodeBrokerNotActive, "no free replica of %s and no broker running", svc)
		}
	}
	if err != nil {
		return nil, err
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		return nil, e
	}
	return r, nil
}

// Call sends one request to service ("CLASS/NAME/SERVICE") and returns the reply.
func (c *Client) Call(ctx context.Context, service string, data []byte) ([]byte, error) {
	r, err := c.CallMsg(ctx, service, data, nil)
	if err != nil {
		return nil, err
	}
	return r.Data, nil
}

// CallMsg is Call with request headers, returning the whole reply message.
func (c *Client) CallMsg(ctx context.Context, service string, data []byte, hdr nats.Header) (*nats.Msg, error) {
	svc, err := proto.ParseService(service)
	if err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	m := &nats.Msg{Data: data, Header: nats.Header{}}
	for k, v := range hdr {
		m.Header[k] = v
	}
	return c.request(ctx, svc, m, watch{})
}
