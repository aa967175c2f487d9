package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

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
	svc, err := c.service(service)
	if err != nil {
		return nil, err
	}
	var w watch
	if t := c.defaultDeadline(ctx, &w); t != nil {
		defer stopDeadline(t)
	}
	m := &nats.Msg{Data: data}
	if len(hdr) > 0 {
		m.Header = make(nats.Header, len(hdr)+2)
		for k, v := range hdr {
			m.Header[k] = v
		}
	}
	return c.request(ctx, svc, m, w)
}

// defaultDeadline gives w the client's default timeout when ctx has no
// deadline, kept by a pooled timer rather than a derived context (a warm
// call or a conversation message then allocates none), and returns the
// timer for stopDeadline; nil when ctx has a deadline.
func (c *Client) defaultDeadline(ctx context.Context, w *watch) *time.Timer {
	if _, ok := ctx.Deadline(); ok {
		return nil
	}
	t := deadlineTimers.Get().(*time.Timer)
	t.Reset(c.timeout)
	w.dl, w.expire = time.Now().Add(c.timeout), t.C
	return t
}

// stopDeadline stops a timer from defaultDeadline and pools it.
func stopDeadline(t *time.Timer) {
	t.Stop() // since Go 1.23 no stale tick survives Stop and Reset
	select { // unless a program sets GODEBUG asynctimerchan=1
	case <-t.C:
	default:
	}
	deadlineTimers.Put(t)
}

// deadlineTimers are the stopped timers of finished calls, for reuse.
var deadlineTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// request sends m to the warm subject of svc; on no responders (no free
// replica) to its standby subject (a standby replica takes it and serves
// from then on); on no responders again to the broker, which queues it.
// It returns the final reply message.
//
// A call without headers (m.Header nil) goes to the warm and standby
// subjects bare: no deadline, no progress asked for. Any header costs
// every party a header block to write, route and parse, about a tenth of
// a warm call's CPU (docs/PERFORMANCE.md), and a warm call needs neither:
// the client keeps its own deadline (and CANCELs the call at the replica
// when it passes), and learns who holds a slow call by FIND. A replica
// that cannot take a bare request bounces it with a 503 rather than
// forwarding it, so it reaches the broker from here, with the headers
// the broker needs.
func (c *Client) request(ctx context.Context, svc *svcNames, m *nats.Msg, w watch) (*nats.Msg, error) {
	m.Subject = svc.warm
	w.svc, w.find = svc.svc, true
	w.bare = m.Header == nil
	if !w.bare {
		m.Header.Set(proto.HdrProgress, "1")
	}
	r, err := c.roundTrip(ctx, m, w)
	if errors.Is(err, errNoResponders) {
		m.Subject = svc.standby
		r, err = c.roundTrip(ctx, m, w)
	}
	if errors.Is(err, errNoResponders) {
		if w.bare { // the broker needs the deadline; statuses tell the client who holds it
			m.Header, w.bare = nats.Header{proto.HdrProgress: {"1"}}, false
		}
		m.Subject = proto.CallSubject(svc.svc)
		m.Header.Set(proto.HdrOnce, "1")
		w.find = false // the broker answers "queued" or an error; a replica that takes it says "working" at once
		w.resend = true
		r, err = c.roundTrip(ctx, m, w)
		if errors.Is(err, errNoResponders) {
			return nil, proto.Errorf(proto.CodeBrokerNotActive, "no free replica of %s and no broker running", svc.svc)
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

// svcNames is a service and its subjects, parsed and built once per
// service name a client uses.
type svcNames struct {
	svc                    proto.Service
	warm, standby, newSubj string
	// bareNewSeen: a replica of the service answered a NEW bare (its
	// version takes bare NEWs, conv.go). bareNewOff: the client's coarse
	// clock (UnixNano) until which NEWs go with headers all the same.
	bareNewSeen atomic.Bool
	bareNewOff  atomic.Int64
}

// bareNewOK reports whether a NEW to the service may go bare at now.
func (s *svcNames) bareNewOK(now int64) bool {
	return s.bareNewSeen.Load() && now >= s.bareNewOff.Load()
}

// maxNames bounds the cache of parsed service names (a client that calls
// ever new names parses them each time beyond it).
const maxNames = 4096

// service parses name, from the client's cache when it can.
func (c *Client) service(name string) (*svcNames, error) {
	if v, ok := c.names.Load(name); ok {
		return v.(*svcNames), nil
	}
	svc, err := proto.ParseService(name)
	if err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "%w", err)
	}
	n := &svcNames{svc: svc, warm: proto.WarmSubject(svc), standby: proto.StandbySubject(svc), newSubj: proto.NewSubject(svc)}
	if c.nNames.Add(1) <= maxNames {
		c.names.Store(name, n)
	}
	return n, nil
}
