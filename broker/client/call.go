package client

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

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
		return nil, proto.Errorf(proto.CodeBadRequest, "%w", err)
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	m := &nats.Msg{Data: data, Header: nats.Header{}}
	for k, v := range hdr {
		m.Header[k] = v
	}
	return c.request(ctx, svc, m, watch{})
}

// request sends m to the warm subject of svc; on no responders (no free
// replica) to its standby subject (a standby replica takes it and serves
// from then on); on no responders again to the broker, which queues it.
// It returns the final reply message.
func (c *Client) request(ctx context.Context, svc proto.Service, m *nats.Msg, w watch) (*nats.Msg, error) {
	m.Subject = proto.WarmSubject(svc)
	m.Header.Set(proto.HdrProgress, "1")
	w.svc, w.find = svc, true
	r, err := c.roundTrip(ctx, m, w)
	if errors.Is(err, errNoResponders) {
		m.Subject = proto.StandbySubject(svc)
		r, err = c.roundTrip(ctx, m, w)
	}
	if errors.Is(err, errNoResponders) {
		m.Subject = proto.CallSubject(svc)
		w.find = false // the broker answers "queued" or an error; a replica that takes it says "working" at once
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
