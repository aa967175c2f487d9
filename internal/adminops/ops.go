package adminops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/placement"
	"github.com/musterhq/muster/internal/streams"
)

// SetIsolation isolates (on) or restores the host whose attach manager
// has id: ISOLATE or RESTORE on proto.AttachControlSubject. It returns the
// manager's registration after the change.
func SetIsolation(ctx context.Context, nc *nats.Conn, id string, on bool) (proto.AttachInfo, error) {
	var ai proto.AttachInfo
	if err := proto.ValidID(id); err != nil {
		return ai, errorf(ErrInvalid, "host %q: %v", id, err)
	}
	op, verb := proto.OpRestore, "restore"
	if on {
		op, verb = proto.OpIsolate, "isolate"
	}
	m := nats.NewMsg(proto.AttachControlSubject(id))
	m.Header.Set(proto.HdrOp, op)
	r, err := nc.RequestMsgWithContext(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		return ai, errorf(ErrNotFound, "host %s not found: no attach manager with that id is online (muster host ls)", id)
	}
	if err != nil {
		return ai, requestError(verb+" host "+id, err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		return ai, fmt.Errorf("%s host %s: %w", verb, id, e)
	}
	if len(r.Data) > 0 {
		if err := json.Unmarshal(r.Data, &ai); err != nil {
			return ai, fmt.Errorf("%s host %s: the attach manager answered %q: %w", verb, id, r.Data, err)
		}
	}
	return ai, nil
}

// StopReplica stops replica id: QUIESCE (it takes no new work, its open
// conversations finish within its grace) or, with now, IMMED (they end at
// once), on proto.ControlSubject.
func StopReplica(ctx context.Context, nc *nats.Conn, id string, now bool) error {
	if err := proto.ValidID(id); err != nil {
		return errorf(ErrInvalid, "replica %q: %v", id, err)
	}
	op := proto.OpQuiesce
	if now {
		op = proto.OpImmed
	}
	m := nats.NewMsg(proto.ControlSubject(id))
	m.Header.Set(proto.HdrOp, op)
	r, err := nc.RequestMsgWithContext(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		return errorf(ErrNotFound, "replica %s not found: no live replica with that id (muster replica ls)", id)
	}
	if err != nil {
		return requestError("stop replica "+id, err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		return fmt.Errorf("stop replica %s: %w", id, e)
	}
	return nil
}

// ResetResult is every answer to a reset.
type ResetResult struct {
	Service string              `json:"service"`
	Reset   []proto.AttachReset `json:"reset"`
	// Offering is how many live attach managers offer the service;
	// fewer answers than that means some did not answer in time.
	Offering int `json:"offering"`
}

// ResetService has every live attach manager offering svc (CLASS/NAME/
// SERVICE) forget that it is failing and start one probe replica:
// a request on proto.AttachResetSubject, answered by each. It waits for
// every one of them until ctx ends, and fails only when none answered.
func ResetService(ctx context.Context, nc *nats.Conn, svc string) (ResetResult, error) {
	s, err := proto.ParseService(svc)
	if err != nil {
		return ResetResult{}, errorf(ErrInvalid, "service %q: %v", svc, err)
	}
	res := ResetResult{Service: s.String(), Reset: []proto.AttachReset{}}
	ams, err := LiveAttachManagers(ctx, nc, time.Now())
	if err != nil {
		return res, err
	}
	for _, a := range ams {
		if a.Offers(s.String()) {
			res.Offering++
		}
	}
	if res.Offering == 0 {
		return res, errorf(ErrNotFound, "no live attach manager offers %s (muster host ls)", s)
	}
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, res.Offering)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return res, requestError("reset "+s.String(), err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(proto.AttachResetSubject(s), inbox, nil); err != nil {
		return res, requestError("reset "+s.String(), err)
	}
	for len(res.Reset) < res.Offering {
		select {
		case m := <-replies:
			var r proto.AttachReset
			if err := json.Unmarshal(m.Data, &r); err != nil {
				return res, fmt.Errorf("reset %s: an attach manager answered %q: %w", s, m.Data, err)
			}
			res.Reset = append(res.Reset, r)
		case <-ctx.Done():
			if len(res.Reset) == 0 {
				return res, fmt.Errorf("reset %s: no attach manager answered (%d offer it): %w", s, res.Offering, ctx.Err())
			}
			sort.Slice(res.Reset, func(i, j int) bool { return res.Reset[i].Attach < res.Reset[j].Attach })
			return res, nil
		}
	}
	sort.Slice(res.Reset, func(i, j int) bool { return res.Reset[i].Attach < res.Reset[j].Attach })
	return res, nil
}

// SetPlacement sets the placement scheme of svc in the host pool bucket
// (proto.PoolBucket); scheme "" removes the service's own scheme, so it
// follows the default. The leading broker uses it for the next placement.
func SetPlacement(ctx context.Context, nc *nats.Conn, svc, scheme string) error {
	s, err := proto.ParseService(svc)
	if err != nil {
		return errorf(ErrInvalid, "service %q: %v", svc, err)
	}
	if scheme != "" {
		if _, err := placement.Parse(scheme); err != nil {
			return errorf(ErrInvalid, "service %s: %v", s, err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := streams.EnsureConfigBucket(ctx, js, proto.PoolBucket)
	if err != nil {
		return requestError("host pool", err)
	}
	key := proto.PoolServiceKey(s)
	if scheme == "" {
		if err := kv.Delete(ctx, key); err != nil {
			return requestError("host pool", err)
		}
		return nil
	}
	b, _ := json.Marshal(proto.ServiceSetting{Placement: scheme})
	if _, err := kv.Put(ctx, key, b); err != nil {
		return requestError("host pool", err)
	}
	return nil
}

// LogChunk is part of a log.
type LogChunk struct {
	Data   []byte
	Offset int64  // where Data starts in the file
	Size   int64  // the file's size when read
	File   string // the file's path on its host
}

// End is the offset just past the chunk.
func (c LogChunk) End() int64 { return c.Offset + int64(len(c.Data)) }

// ReadLog reads one chunk of a log from the attach manager host: its own
// (replica "") or that of one of its replicas, from offset (negative: that
// many bytes before the end), at most max bytes (0: as much as one message
// holds). A replica whose log the host does not have is ErrNotFound.
func ReadLog(ctx context.Context, nc *nats.Conn, host, replica string, offset int64, max int) (LogChunk, error) {
	var c LogChunk
	if err := proto.ValidID(host); err != nil {
		return c, errorf(ErrInvalid, "host %q: %v", host, err)
	}
	if replica != "" {
		if err := proto.ValidID(replica); err != nil {
			return c, errorf(ErrInvalid, "replica %q: %v", replica, err)
		}
	}
	body, _ := json.Marshal(proto.LogRequest{Replica: replica, Offset: offset, Max: max})
	r, err := nc.RequestWithContext(ctx, proto.AttachLogsSubject(host), body)
	if errors.Is(err, nats.ErrNoResponders) {
		return c, errorf(ErrNotFound, "host %s not found: no attach manager with that id is online (muster host ls)", host)
	}
	if err != nil {
		return c, requestError("logs of "+host, err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		if e.Code == proto.CodeParticipantUnknown {
			return c, &opError{msg: e.Error(), kind: ErrNotFound}
		}
		return c, e
	}
	c.Data = r.Data
	c.Offset, _ = strconv.ParseInt(r.Header.Get(proto.HdrLogOffset), 10, 64)
	c.Size, _ = strconv.ParseInt(r.Header.Get(proto.HdrLogSize), 10, 64)
	c.File = r.Header.Get(proto.HdrLogFile)
	return c, nil
}

// LiveAttachManagers reads the attach managers' registrations not expired
// at now, sorted by id. No bucket means no attach manager ever registered.
func LiveAttachManagers(ctx context.Context, nc *nats.Conn, now time.Time) ([]proto.AttachInfo, error) {
	out := []proto.AttachInfo{}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, proto.AttachBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, requestError("open bucket "+proto.AttachBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, requestError("read bucket "+proto.AttachBucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // all current records seen
				sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
				return out, nil
			}
			if ai, err := proto.DecodeAttachInfo(e.Value()); err == nil && !ai.Expired(now) {
				out = append(out, ai)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("read bucket %s: %w", proto.AttachBucket, ctx.Err())
		}
	}
}
