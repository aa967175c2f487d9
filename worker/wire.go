package worker

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// message converts a NATS message into a Message, counting it; the error
// is a malformed deadline header.
func (r *replica) message(nm *nats.Msg) (*Message, error) {
	m, err := r.messageValue(nm)
	return &m, err
}

// messageValue is message without the allocation: accept keeps the first
// message of a call or conversation inside its Conv.
func (r *replica) messageValue(nm *nats.Msg) (Message, error) {
	r.stats.msgs.Add(1)
	r.stats.bytesIn.Add(int64(len(nm.Data)))
	if len(nm.Header) == 0 { // a bare request: no deadline, and no clock read for it
		return Message{Data: nm.Data, Header: nm.Header}, nil
	}
	dl, err := proto.ParseDeadline(nm.Header, time.Now())
	return Message{Data: nm.Data, Header: nm.Header, Deadline: dl}, err
}

// replyError sends the coded error e to a caller. It takes no lock.
func (r *replica) replyError(to string, e *proto.Error) {
	if to == "" {
		return
	}
	m := nats.NewMsg(to)
	proto.SetError(m.Header, e)
	m.Header.Set(proto.HdrReplica, r.cfg.replicaID)
	_ = r.nc.PublishMsg(m)
}

// ack sends an empty acknowledgement naming the replica (and conversation
// conv, if any). It takes no lock.
func (r *replica) ack(to, conv string) {
	if to == "" {
		return
	}
	m := nats.NewMsg(to)
	m.Header.Set(proto.HdrReplica, r.cfg.replicaID)
	if conv != "" {
		m.Header.Set(proto.HdrConv, conv)
	}
	_ = r.nc.PublishMsg(m)
}

// asWireError turns a handler's error into the wire error the client sees.
func asWireError(err error) *proto.Error {
	var e *proto.Error
	if errors.As(err, &e) {
		return e
	}
	return proto.Errorf(proto.CodeServiceError, "%v", err)
}
