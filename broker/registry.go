package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/kvwatch"
	"github.com/musterhq/muster/internal/streams"
)

// registry mirrors the replica and attach-manager buckets in memory,
// through KV followers (package kvwatch), so the broker decides without a
// round trip.
//
// Heartbeats are judged by the time the registry could see writes: while
// its view is not current (a disconnect, a watcher being recreated), and
// for records written before that, the blind time does not count towards
// a record's age. A NATS restart stops every writer and the registry
// alike; no record may look dead only because nobody could write.
type registry struct {
	log              *slog.Logger
	repKV, attKV     jetstream.KeyValue
	rep, att         *kvwatch.Follower
	mu               sync.Mutex
	replicas         map[string]proto.ReplicaInfo
	attach           map[string]proto.AttachInfo
	replicaRevisions map[string]uint64
	bySvc            map[string]map[string]bool // service → replica ids
	offers           map[string]map[string]bool // service → attach manager ids that offer it
	lastReg          map[string]time.Time       // service → when a replica of it last registered
	repCurrent       bool                       // the replica follower is current
	attCurrent       bool                       // the attach follower is current
	pool             poolView                   // host pool and placement settings (place.go)
	lostAt           time.Time                  // when the view last stopped being current (zero: never)
	resumedAt        time.Time                  // when it became current again after lostAt (zero: not yet)
}

// figures are the registry's counts for one service.
type figures struct {
	Replicas, Quiescing, Standby, Capacity, Active int
}

func newRegistry(log *slog.Logger) *registry {
	return &registry{log: log, replicas: map[string]proto.ReplicaInfo{}, attach: map[string]proto.AttachInfo{},
		replicaRevisions: map[string]uint64{}, bySvc: map[string]map[string]bool{}, offers: map[string]map[string]bool{},
		lastReg: map[string]time.Time{}, pool: newPoolView()}
}

// startRegistry fills a registry from the replica and attach-manager
// buckets and keeps it following them, on routines of g, until runCtx is
// done. It returns once the buckets' current records are applied.
func startRegistry(ctx, runCtx context.Context, js jetstream.JetStream, log *slog.Logger, g *routines) (*registry, error) {
	r := newRegistry(log)
	var err error
	if r.repKV, err = streams.EnsureBucket(ctx, js, proto.ReplicaBucket); err != nil {
		return nil, err
	}
	if r.attKV, err = streams.EnsureBucket(ctx, js, proto.AttachBucket); err != nil {
		return nil, err
	}
	r.rep = kvwatch.New(kvwatch.Config{KV: r.repKV, Conn: js.Conn(), Log: log,
		Apply:   func(e jetstream.KeyValueEntry) { r.apply(e, true) },
		Current: func(c bool) { r.setCurrent(&r.repCurrent, c) }})
	r.att = kvwatch.New(kvwatch.Config{KV: r.attKV, Conn: js.Conn(), Log: log,
		Apply:   func(e jetstream.KeyValueEntry) { r.apply(e, false) },
		Current: func(c bool) { r.setCurrent(&r.attCurrent, c) }})
	for _, f := range []*kvwatch.Follower{r.rep, r.att} {
		if !g.start(func() { f.Run(runCtx) }) {
			return nil, fmt.Errorf("broker: shut down while starting")
		}
	}
	if err := r.sync(ctx); err != nil { // the initial values, so the first decisions see them
		return nil, fmt.Errorf("broker: read the registrations: %w", err)
	}
	return r, nil
}

// setCurrent records that one follower became current or stopped being
// so, and the start and end of the registry's blind time.
func (r *registry) setCurrent(which *bool, c bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.repCurrent && r.attCurrent
	*which = c
	now := r.repCurrent && r.attCurrent
	switch {
	case was && !now:
		r.lostAt, r.resumedAt = time.Now(), time.Time{}
		r.log.Warn("registry view not current: deciding fail-open until it is")
	case !was && now && !r.lostAt.IsZero():
		r.resumedAt = time.Now()
		r.log.Info("registry view current again", "after", r.resumedAt.Sub(r.lostAt).Round(time.Millisecond))
	}
}

// current reports whether both followers are current: what the registry
// holds is the buckets' present state.
func (r *registry) current() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.repCurrent && r.attCurrent
}

// resumeGrace extends the blind time past the moment the view is current
// again: the writers, cut off by the same outage, need to reconnect (every
// 250 ms) and rewrite their records (replicas at once, attach managers at
// their next heartbeat) before silence means anything.
const resumeGrace = 2 * time.Second

// blindLocked is how much of the time from since to now the registry's
// view was not current, plus resumeGrace after it was current again (its
// last blind interval only).
func (r *registry) blindLocked(since, now time.Time) time.Duration {
	if r.lostAt.IsZero() {
		return 0
	}
	end := now
	if !r.resumedAt.IsZero() && r.resumedAt.Add(resumeGrace).Before(now) {
		end = r.resumedAt.Add(resumeGrace)
	}
	start := r.lostAt
	if since.After(start) {
		start = since
	}
	if end.After(start) {
		return end.Sub(start)
	}
	return 0
}

// expiredLocked reports whether a record last written at updated (Unix
// ms) is expired at now, not counting the registry's blind time.
func (r *registry) expiredLocked(rec interface{ Expired(time.Time) bool }, updated int64, now time.Time) bool {
	if !rec.Expired(now) {
		return false
	}
	blind := r.blindLocked(time.UnixMilli(updated), now)
	return blind == 0 || rec.Expired(now.Add(-blind))
}

func (r *registry) replicaExpiredLocked(ri proto.ReplicaInfo, now time.Time) bool {
	return r.expiredLocked(ri, ri.Updated, now)
}

func (r *registry) attachExpiredLocked(ai proto.AttachInfo, now time.Time) bool {
	return r.expiredLocked(ai, ai.Updated, now)
}

func (r *registry) apply(e jetstream.KeyValueEntry, replicas bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		if replicas {
			r.dropReplicaLocked(key)
		} else {
			r.dropAttachLocked(key)
		}
		return
	}
	if replicas {
		ri, err := proto.DecodeReplicaInfo(e.Value())
		if err != nil {
			r.log.Warn("bad replica record ignored", "key", key, "err", err)
			return
		}
		r.setReplicaLocked(key, ri, e.Revision())
		return
	}
	ai, err := proto.DecodeAttachInfo(e.Value())
	if err != nil {
		r.log.Warn("bad attach record ignored", "key", key, "err", err)
		return
	}
	r.setAttachLocked(key, ai)
}

// A record's age is judged from when it reached this broker at the
// latest: a writer's claimed "updated" is taken only if it is not in the
// future, so a clock that runs ahead, or a forged record dated a year
// ahead, expires three heartbeats after its last write like any other.
// And no record outlives the bucket's own TTL (streams.RegistrationTTL),
// which removes it without a delete the watch would see: three heartbeats
// count as at most that long.

// maxHeartbeatMS is the longest heartbeat the registry honours: three of
// them fit in the bucket's TTL.
var maxHeartbeatMS = streams.RegistrationTTL.Milliseconds() / 3

func (r *registry) setReplicaLocked(key string, ri proto.ReplicaInfo, rev uint64) {
	ri.Updated = min(ri.Updated, time.Now().UnixMilli())
	ri.HeartbeatMS = min(ri.HeartbeatMS, maxHeartbeatMS)
	if _, known := r.replicas[key]; !known {
		r.lastReg[ri.Service] = time.Now()
	}
	r.dropReplicaLocked(key)
	r.replicas[key] = ri
	r.replicaRevisions[key] = rev
	addIndex(r.bySvc, ri.Service, key)
}

func (r *registry) setAttachLocked(key string, ai proto.AttachInfo) {
	ai.Updated = min(ai.Updated, time.Now().UnixMilli())
	ai.HeartbeatMS = min(ai.HeartbeatMS, maxHeartbeatMS)
	r.dropAttachLocked(key)
	r.attach[key] = ai
	for _, s := range ai.Services {
		addIndex(r.offers, s, key)
	}
}

func (r *registry) dropReplicaLocked(id string) {
	if ri, ok := r.replicas[id]; ok {
		delIndex(r.bySvc, ri.Service, id)
	}
	delete(r.replicas, id)
	delete(r.replicaRevisions, id)
}

func (r *registry) dropAttachLocked(id string) {
	if ai, ok := r.attach[id]; ok {
		for _, s := range ai.Services {
			delIndex(r.offers, s, id)
		}
	}
	delete(r.attach, id)
}

func addIndex(idx map[string]map[string]bool, k, id string) {
	if idx[k] == nil {
		idx[k] = map[string]bool{}
	}
	idx[k][id] = true
}

func delIndex(idx map[string]map[string]bool, k, id string) {
	delete(idx[k], id)
	if len(idx[k]) == 0 {
		delete(idx, k)
	}
}

// registeredSince returns when a replica of svc last registered (zero if never).
func (r *registry) registeredSince(svc string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastReg[svc]
}

// sync waits (up to ctx) until both followers are current and have
// applied every record stored when it was called, so a decision made after
// it sees a replica that registered just before. It returns an error when
// they are not caught up by then: the view may be stale. Only the slow
// paths (0007/0007) and Start use it.
func (r *registry) sync(ctx context.Context) error {
	errs := make(chan error, 2)
	for _, f := range []*kvwatch.Follower{r.rep, r.att} {
		go func() { errs <- f.Sync(ctx) }()
	}
	return errors.Join(<-errs, <-errs)
}

// known returns the live replicas of svc and whether an attach manager can
// start it.
func (r *registry) known(svc string, now time.Time) (live int, attachable bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.bySvc[svc] {
		if ri := r.replicas[id]; ri.State == proto.StateReady && !r.replicaExpiredLocked(ri, now) {
			live++ // quiescing replicas take no new work
		}
	}
	for id := range r.offers[svc] {
		if ai := r.attach[id]; !ai.Isolated && !r.attachExpiredLocked(ai, now) {
			return live, true
		}
	}
	return live, false
}

func (r *registry) figures(svc string, now time.Time) figures {
	r.mu.Lock()
	defer r.mu.Unlock()
	var f figures
	for id := range r.bySvc[svc] {
		ri := r.replicas[id]
		if r.replicaExpiredLocked(ri, now) {
			continue
		}
		switch ri.State {
		case proto.StateQuiescing:
			f.Quiescing++
		case proto.StateStandby:
			f.Standby++ // parked: no slot, no work, in no other figure
			continue
		default:
			f.Replicas++
			f.Capacity += ri.Capacity
		}
		f.Active += ri.Active
	}
	return f
}

// services lists the services with a live replica or an attach manager.
func (r *registry) services(now time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, ri := range r.replicas {
		if !r.replicaExpiredLocked(ri, now) {
			seen[ri.Service] = true
		}
	}
	for _, ai := range r.attach {
		if !r.attachExpiredLocked(ai, now) {
			for _, s := range ai.Services {
				seen[s] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	return out
}

// sweep deletes the records of replicas whose heartbeats stopped (they
// died without deregistering), unless they were rewritten meanwhile. It
// deletes nothing while the view is not current.
func (r *registry) sweep(ctx context.Context, now time.Time) {
	r.mu.Lock()
	if !r.repCurrent || !r.attCurrent {
		r.mu.Unlock()
		return
	}
	var dead []string
	var revs []uint64
	for id, ri := range r.replicas {
		if r.replicaExpiredLocked(ri, now) {
			dead = append(dead, id)
			revs = append(revs, r.replicaRevisions[id])
		}
	}
	r.mu.Unlock()
	for i, id := range dead {
		if err := r.repKV.Delete(ctx, id, jetstream.LastRevision(revs[i])); err == nil {
			r.log.Info("replica expired", "replica", id)
		}
	}
}

// stillFailing re-reads, from the bucket, the records of the managers
// offering svc that failing (the view) found: the view follows the bucket
// a moment behind, and `muster service reset` rewrites a manager's record
// just before its caller calls again, which must then not be turned away.
// It reports svc failing only if every record it reads still says so; a
// record it cannot read now counts as the view has it. A call to a failing
// service costs the broker these reads instead of a queue write.
func (r *registry) stillFailing(ctx context.Context, svc string, now time.Time) (string, bool) {
	r.mu.Lock()
	view := map[string]string{}
	r.eachOfferingLocked(svc, now, func(id string, ai proto.AttachInfo) bool {
		view[id] = ai.Failing[svc]
		return true
	})
	r.mu.Unlock()
	reason := ""
	for id, why := range view {
		if e, err := r.attKV.Get(ctx, id); err == nil {
			if ai, err := proto.DecodeAttachInfo(e.Value()); err == nil && !ai.Isolated {
				why = ai.Failing[svc]
			}
		}
		if why == "" {
			return "", false
		}
		reason = id + ": " + why
	}
	return reason, len(view) > 0
}

// eachOfferingLocked calls f with the key and record of every live,
// non-isolated attach manager offering svc, until f returns false.
func (r *registry) eachOfferingLocked(svc string, now time.Time, f func(id string, ai proto.AttachInfo) bool) {
	for id := range r.offers[svc] {
		ai := r.attach[id]
		if ai.Isolated || r.attachExpiredLocked(ai, now) {
			continue
		}
		if !f(id, ai) {
			return
		}
	}
}

// failing returns why svc cannot be started when every live, non-isolated
// attach manager offering it reports it failing.
func (r *registry) failing(svc string, now time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reason, offered, all := "", false, true
	r.eachOfferingLocked(svc, now, func(_ string, ai proto.AttachInfo) bool {
		offered = true
		why := ai.Failing[svc]
		if why == "" {
			all = false
			return false
		}
		reason = ai.ID + ": " + why
		return true
	})
	if !all {
		return "", false
	}
	return reason, offered
}
