package broker

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/kvwatch"
	"github.com/musterhq/muster/internal/streams"
)

// registry mirrors the replica and attach-manager buckets in memory,
// through KV watchers, so the broker decides without a round trip.
type registry struct {
	log              *slog.Logger
	repKV, attKV     jetstream.KeyValue
	mu               sync.Mutex
	replicas         map[string]proto.ReplicaInfo
	attach           map[string]proto.AttachInfo
	replicaRevisions map[string]uint64
	bySvc            map[string]map[string]bool    // service → replica ids
	offers           map[string]map[string]bool    // service → attach manager ids that offer it
	lastReg          map[string]time.Time          // service → when a replica of it last registered
	lastRev          map[jetstream.KeyValue]uint64 // highest revision applied per bucket
	changed          chan struct{}                 // closed and replaced at every apply
}

// figures are the registry's counts for one service.
type figures struct {
	Replicas, Quiescing, Capacity, Active int
}

func newRegistry(log *slog.Logger) *registry {
	return &registry{log: log, replicas: map[string]proto.ReplicaInfo{}, attach: map[string]proto.AttachInfo{},
		replicaRevisions: map[string]uint64{}, bySvc: map[string]map[string]bool{}, offers: map[string]map[string]bool{},
		lastReg: map[string]time.Time{}, lastRev: map[jetstream.KeyValue]uint64{}, changed: make(chan struct{})}
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
	for _, kv := range []jetstream.KeyValue{r.repKV, r.attKV} {
		w, err := kv.WatchAll(runCtx)
		if err != nil {
			return nil, fmt.Errorf("broker: watch %s: %w", kv.Bucket(), err)
		}
		replicas := kv == r.repKV
		ready := make(chan struct{})
		if !g.start(func() {
			kvwatch.Follow(runCtx, w, func(e jetstream.KeyValueEntry) { r.apply(e, replicas) }, func() { close(ready) })
		}) {
			_ = w.Stop()
			return nil, fmt.Errorf("broker: shut down while starting")
		}
		select { // the initial values, so the first decisions see them
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("broker: read %s: %w", kv.Bucket(), ctx.Err())
		}
	}
	return r, nil
}

func (r *registry) apply(e jetstream.KeyValueEntry, replicas bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kv := r.attKV
	if replicas {
		kv = r.repKV
	}
	r.lastRev[kv] = max(r.lastRev[kv], e.Revision())
	close(r.changed)
	r.changed = make(chan struct{})
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

func (r *registry) setReplicaLocked(key string, ri proto.ReplicaInfo, rev uint64) {
	if _, known := r.replicas[key]; !known {
		r.lastReg[ri.Service] = time.Now()
	}
	r.dropReplicaLocked(key)
	r.replicas[key] = ri
	r.replicaRevisions[key] = rev
	addIndex(r.bySvc, ri.Service, key)
}

func (r *registry) setAttachLocked(key string, ai proto.AttachInfo) {
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

// sync waits (up to ctx) until the watchers have applied every record
// stored when it was called, so a decision made after it sees a replica
// that registered just before. Only the slow paths (0007/0007) use it.
func (r *registry) sync(ctx context.Context) {
	for _, kv := range []jetstream.KeyValue{r.repKV, r.attKV} {
		st, err := kv.Status(ctx)
		if err != nil {
			return
		}
		bs, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok {
			return
		}
		state := bs.StreamInfo().State
		if state.Msgs == 0 {
			continue // everything expired: there is nothing the watcher could be missing
		}
		// Records expire oldest first (one TTL for the bucket), so the newest
		// one, LastSeq, is still stored and the watcher will deliver it.
		want := state.LastSeq
		for {
			r.mu.Lock()
			got, ch := r.lastRev[kv], r.changed
			r.mu.Unlock()
			if got >= want {
				break
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}
}

// known returns the live replicas of svc and whether an attach manager can
// start it.
func (r *registry) known(svc string, now time.Time) (live int, attachable bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.bySvc[svc] {
		if ri := r.replicas[id]; ri.State == proto.StateReady && !ri.Expired(now) {
			live++ // quiescing replicas take no new work
		}
	}
	for id := range r.offers[svc] {
		if ai := r.attach[id]; !ai.Isolated && !ai.Expired(now) {
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
		if ri.Expired(now) {
			continue
		}
		if ri.State == proto.StateQuiescing {
			f.Quiescing++
		} else {
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
		if !ri.Expired(now) {
			seen[ri.Service] = true
		}
	}
	for _, ai := range r.attach {
		if !ai.Expired(now) {
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
// died without deregistering), unless they were rewritten meanwhile.
func (r *registry) sweep(ctx context.Context, now time.Time) {
	r.mu.Lock()
	var dead []string
	var revs []uint64
	for id, ri := range r.replicas {
		if ri.Expired(now) {
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

// chooseAttach picks the one attach manager to notify for svc among the
// live, non-isolated ones that offer it and do not report it failing: the
// one with the most room (fewest replicas per allowed replica), ties
// broken round-robin by turn.
func (r *registry) chooseAttach(svc string, now time.Time, turn uint64) (proto.AttachInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ties []string
	best := 0.0
	for id := range r.offers[svc] {
		ai := r.attach[id]
		if ai.Isolated || ai.Expired(now) || ai.Failing[svc] != "" {
			continue
		}
		l := float64(ai.Replicas)
		if ai.MaxReplicas > 0 {
			l /= float64(ai.MaxReplicas)
		}
		switch {
		case len(ties) == 0 || l < best:
			best, ties = l, append(ties[:0], id)
		case l == best:
			ties = append(ties, id)
		}
	}
	if len(ties) == 0 {
		return proto.AttachInfo{}, false
	}
	sort.Strings(ties) // map order is random: make round-robin deterministic
	return r.attach[ties[turn%uint64(len(ties))]], true
}

// failing returns why svc cannot be started when every live, non-isolated
// attach manager offering it reports it failing.
func (r *registry) failing(svc string, now time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reason, offered := "", false
	for id := range r.offers[svc] {
		ai := r.attach[id]
		if ai.Isolated || ai.Expired(now) {
			continue
		}
		offered = true
		why := ai.Failing[svc]
		if why == "" {
			return "", false
		}
		reason = ai.ID + ": " + why
	}
	return reason, offered
}
