package broker

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
)

// One leading broker. Every broker queues the calls it receives, but only
// the leader sends attach notifications and re-checks waiting work, so the
// number of notifications does not grow with the number of brokers. The
// others hint the leader when they queue a request
// (proto.BrokerHintPrefix), and the leader's periodic re-check catches a
// hint lost in a change of leader.
//
// The lease is one key in the KV bucket proto.LeaseBucket, held by
// compare-and-set on its revision: the leader rewrites it every
// leaseRenew, conditioned on the revision it last wrote; the others read it
// every leasePoll and take it over, conditioned on the revision they last
// saw, once that revision has not changed for leaseTimeout by their own
// clock (no clock is compared across hosts). The revision at which a
// broker took the lease is its epoch: its notifications carry it
// (Notification.Lease) and attach managers drop notifications from an
// older epoch, so a deposed leader that has not noticed yet cannot have
// work started twice. A leader that shuts down deletes the lease, and
// another broker leads within leasePoll.
//
// Fail open: when a broker cannot read the lease for leaseTimeout (the
// bucket is unavailable), it notifies for the requests it queues itself,
// as if it led, with epoch 0 (attach managers accept it).
const (
	leaseKey     = "lead"
	leaseRenew   = 250 * time.Millisecond
	leasePoll    = 100 * time.Millisecond
	leaseTimeout = time.Second
	leaseOpTime  = time.Second // bound of one KV operation
)

// lease is a broker's view of the leadership.
type lease struct {
	b    *Broker
	kv   jetstream.KeyValue // nil until the bucket could be opened
	body []byte             // our lease record

	mu        sync.Mutex
	rev       uint64    // the key's last revision seen (0: none)
	changed   time.Time // when rev last changed, by our clock
	mine      bool      // we hold it at rev
	epoch     uint64    // the revision at which we took it
	holder    string    // the broker holding it, as last read
	readable  time.Time // when the lease was last read or written successfully
	takenOver time.Time // when we last became leader
}

// leaseRecord is the lease's value.
type leaseRecord struct {
	Broker string `json:"broker"`
	Host   string `json:"host"`
}

// Leading reports whether this broker leads (or acts as if it did, the
// lease being unreadable).
func (b *Broker) Leading() bool {
	l := b.lease
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mine || time.Since(l.readable) > leaseTimeout
}

// epoch is the lease revision to put in notifications (0: none held).
func (l *lease) currentEpoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mine {
		return l.epoch
	}
	return 0
}

// Leader returns the id of the broker holding the lease as last read
// ("" when none).
func (b *Broker) Leader() string {
	l := b.lease
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mine {
		return b.cfg.ID
	}
	return l.holder
}

// start opens the bucket and reads (or takes) the lease once, so a broker
// that starts alone leads from its first request. A bucket that cannot be
// opened is not an error: run keeps trying, and fail open applies.
func (l *lease) start(ctx context.Context) {
	l.body, _ = json.Marshal(leaseRecord{Broker: l.b.cfg.ID, Host: hostname()})
	octx, cancel := context.WithTimeout(ctx, 2*leaseOpTime)
	defer cancel()
	kv, err := streams.EnsureBucket(octx, l.b.js, proto.LeaseBucket)
	if err != nil {
		l.b.log.Warn("lease bucket unavailable: notifying as if leading until it is", "err", err)
		return
	}
	l.kv = kv
	l.watch(octx, l.body)
}

// run keeps the lease: it runs until ctx ends, then releases the lease if
// this broker holds it.
func (l *lease) run(ctx context.Context) {
	body := l.body
	t := time.NewTicker(leasePoll)
	defer t.Stop()
	lastRenew := time.Time{}
	for {
		select {
		case <-ctx.Done():
			l.release()
			return
		case <-t.C:
		}
		if l.kv == nil {
			octx, cancel := context.WithTimeout(ctx, leaseOpTime)
			kv, err := streams.EnsureBucket(octx, l.b.js, proto.LeaseBucket)
			cancel()
			if err != nil {
				continue
			}
			l.kv = kv
		}
		l.mu.Lock()
		mine := l.mine
		l.mu.Unlock()
		if mine {
			if time.Since(lastRenew) >= leaseRenew {
				lastRenew = time.Now()
				l.renew(ctx, body)
			}
			continue
		}
		l.watch(ctx, body)
	}
}

// renew rewrites the lease, conditioned on our last revision.
func (l *lease) renew(ctx context.Context, body []byte) {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	octx, cancel := context.WithTimeout(ctx, leaseOpTime)
	nrev, err := l.kv.Update(octx, leaseKey, body, rev)
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	switch {
	case err == nil:
		l.rev, l.changed, l.readable = nrev, now, now
	case isWrongRevision(err):
		l.mine = false
		l.readable = now
		l.b.log.Warn("broker lost the lead: another broker took the lease", "epoch", l.epoch)
	case now.Sub(l.changed) > leaseTimeout:
		// Unrenewed for a whole timeout: another broker may have taken it
		// by now. Step down; fail open takes over if the bucket is gone.
		l.mine = false
		l.b.log.Warn("broker stepped down: lease not renewed in time", "err", err)
	}
}

// watch reads the lease and takes it over when it is free or stale.
func (l *lease) watch(ctx context.Context, body []byte) {
	octx, cancel := context.WithTimeout(ctx, leaseOpTime)
	defer cancel()
	e, err := l.kv.Get(octx, leaseKey)
	now := time.Now()
	var rev uint64
	var holder string
	switch {
	case err == nil:
		rev = e.Revision()
		var rec leaseRecord
		_ = json.Unmarshal(e.Value(), &rec)
		holder = rec.Broker
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		// Nobody holds it (never, or released): take it. Create also takes
		// a deleted key, and fails if another broker was faster.
		nrev, cerr := l.kv.Create(octx, leaseKey, body)
		l.mu.Lock()
		if cerr == nil || errors.Is(cerr, jetstream.ErrKeyExists) {
			l.readable = now
		}
		if cerr == nil {
			l.takeLocked(nrev, now)
		}
		l.mu.Unlock()
		return
	default:
		return // unreadable: readable ages, and fail open follows
	}
	l.mu.Lock()
	l.readable = now
	l.holder = holder
	if rev != l.rev {
		l.rev, l.changed = rev, now
		l.mu.Unlock()
		return
	}
	stale := now.Sub(l.changed) > leaseTimeout
	l.mu.Unlock()
	if !stale {
		return
	}
	nrev, err := l.kv.Update(octx, leaseKey, body, rev)
	if err != nil {
		return // another broker was faster, or the bucket is away
	}
	l.mu.Lock()
	l.b.log.Warn("broker took over the lead: the leader stopped renewing its lease", "from", holder)
	l.takeLocked(nrev, now)
	l.mu.Unlock()
}

// takeLocked records that we hold the lease at rev.
func (l *lease) takeLocked(rev uint64, now time.Time) {
	l.mine, l.rev, l.epoch, l.changed, l.readable, l.takenOver = true, rev, rev, now, now, now
	l.holder = l.b.cfg.ID
	l.b.log.Info("broker leads notifications", "epoch", rev)
}

// release deletes the lease if we hold it, so another broker leads at once.
func (l *lease) release() {
	l.mu.Lock()
	mine, rev := l.mine, l.rev
	l.mine = false
	l.mu.Unlock()
	if !mine || l.kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTime)
	defer cancel()
	_ = l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(rev))
}

// isWrongRevision reports a compare-and-set that lost.
func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}

// hint tells the leader that svc has new queued work (a follower's
// queueing). The leader schedules a notification as for its own.
func (b *Broker) hint(svc proto.Service) {
	_ = b.nc.Publish(proto.BrokerHintPrefix+svc.Tokens(), nil)
}

// onHint is the leader's side of hint.
func (b *Broker) onHint(m *nats.Msg) {
	if !b.routines.enter() {
		return
	}
	defer b.routines.leave()
	if !b.Leading() {
		return
	}
	svc, err := proto.ServiceFromTokens(m.Subject)
	if err != nil {
		return
	}
	b.mu.Lock()
	st := b.stateLocked(svc)
	b.waitingLocked(st, time.Now())
	b.scheduleLocked(svc, st)
	b.mu.Unlock()
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
