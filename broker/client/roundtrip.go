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
	replica string         // replica to ping ("" until a "working" status names it)
	conv    string         // conversation id, checked by the ping
	events  chan *nats.Msg // conversation events (nil for calls)
}

// roundTrip publishes m with a fresh reply token and waits for the final
// message: a reply, an error reply, a 503, a conversation event, a dead
// replica, the deadline or Close, whichever comes first.
func (c *Client) roundTrip(ctx context.Context, m *nats.Msg, w watch) (*nats.Msg, error) {
	if err := c.checkSize(m); err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	m.Header.Set(proto.HdrDeadline, proto.FormatDeadline(dl))
	token, ch, err := c.register()
	if err != nil {
		return nil, err
	}
	defer c.unregister(token)
	m.Reply = c.prefix + token
	if err := c.nc.PublishMsg(m); err != nil {
		return nil, transportError(err)
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
		case <-c.done:
			return nil, closedError()
		case <-ctx.Done():
			return nil, proto.Errorf(proto.CodeWaitTimeout, "no reply within the deadline: %w", ctx.Err())
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
