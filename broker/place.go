package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/kvwatch"
	"github.com/musterhq/muster/internal/placement"
	"github.com/musterhq/muster/internal/streams"
)

// Placement: when work waits, the leading broker chooses the attach
// manager that starts the next replica by the service's placement scheme
// (internal/placement), among the candidates: hosts online (registration
// younger than three heartbeats), enabled in the pool, not isolated,
// offering the service, not failing it, and under their limits (the
// pool's overrides first). Hosts report figures once per heartbeat, so
// the registry counts the placements it made on each host since that
// host's last registration (placed) and the chooser counts them too.
//
// The pool (proto.PoolBucket) is followed like the registrations; while it
// cannot be read, the last view is used (fail open).

// poolView is the registry's copy of the pool; guarded by registry.mu.
type poolView struct {
	hosts      map[string]proto.HostSetting
	schemes    map[string]placement.Scheme // service → scheme
	defScheme  placement.Scheme            // the pool's default ("" = none)
	flagScheme placement.Scheme            // the broker's --placement
	placed     map[string]placedCount      // host → placements since its last registration
	last       map[string]lastPlacement    // service → its last placement
	chooser    *placement.Chooser
}

// lastPlacement is where a service's last replica was placed, and when.
type lastPlacement struct {
	host string
	at   time.Time
}

// stickFor is how long the notifications for work that still waits go to
// the host a replica of the service was just placed on, as long as no
// replica of it registered since: that host's own clamp (the queue depth
// less its replicas starting) then decides whether more are needed,
// instead of a second host starting one for the same request.
const stickFor = 2 * time.Second

type placedCount struct {
	updated int64 // the host registration's updated when counting started
	n       int
}

func newPoolView() poolView {
	return poolView{hosts: map[string]proto.HostSetting{}, schemes: map[string]placement.Scheme{},
		placed: map[string]placedCount{}, last: map[string]lastPlacement{}, chooser: placement.New(uint64(time.Now().UnixNano()))}
}

// followPool starts following the pool bucket (creating it if needed). A
// pool that cannot be opened is logged, not fatal: placement then uses
// defaults until it can.
func (r *registry) followPool(ctx, runCtx context.Context, js jetstream.JetStream, g *routines) {
	kv, err := streams.EnsureConfigBucket(ctx, js, proto.PoolBucket)
	if err != nil {
		r.log.Warn("host pool bucket unavailable: every registered host is a candidate, default placement", "err", err)
		return
	}
	f := kvwatch.New(kvwatch.Config{KV: kv, Conn: js.Conn(), Log: r.log, Apply: r.applyPool})
	if g.start(func() { f.Run(runCtx) }) {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := f.Sync(sctx); err != nil {
			r.log.Warn("host pool not read yet", "err", err)
		}
	}
}

// applyPool applies one pool entry.
func (r *registry) applyPool(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key, del := e.Key(), e.Operation() != jetstream.KeyValuePut
	switch {
	case strings.HasPrefix(key, proto.PoolHostPrefix):
		id := strings.TrimPrefix(key, proto.PoolHostPrefix)
		if del {
			delete(r.pool.hosts, id)
			return
		}
		if h, err := proto.DecodeHostSetting(e.Value()); err == nil && h.ID == id {
			r.pool.hosts[id] = h
		} else {
			r.log.Warn("bad pool host record ignored", "key", key, "err", err)
		}
	case key == proto.PoolDefaultKey:
		r.pool.defScheme = ""
		if !del {
			if sc, err := decodeScheme(e.Value()); err == nil {
				r.pool.defScheme = sc
			} else {
				r.log.Warn("bad default placement ignored", "err", err)
			}
		}
	default:
		svc, ok := proto.ServiceOfPoolKey(key)
		if !ok {
			return
		}
		if del {
			delete(r.pool.schemes, svc.String())
			return
		}
		if sc, err := decodeScheme(e.Value()); err == nil {
			r.pool.schemes[svc.String()] = sc
		} else {
			r.log.Warn("bad placement setting ignored", "service", svc.String(), "err", err)
		}
	}
}

func decodeScheme(b []byte) (placement.Scheme, error) {
	var s proto.ServiceSetting
	if err := json.Unmarshal(b, &s); err != nil {
		return "", err
	}
	return placement.Parse(s.Placement)
}

// schemeLocked is svc's scheme: its own, else the pool's default, else
// the broker's flag, else placement.Default.
func (r *registry) schemeLocked(svc string) placement.Scheme {
	switch {
	case r.pool.schemes[svc] != "":
		return r.pool.schemes[svc]
	case r.pool.defScheme != "":
		return r.pool.defScheme
	case r.pool.flagScheme != "":
		return r.pool.flagScheme
	}
	return placement.Default
}

// choice is a placement decision.
type choice struct {
	attach proto.AttachInfo
	why    string // the scheme and its reason, or why no host can take it
	// offered: live, non-isolated hosts offer the service (and do not all
	// report it failing): when none is a candidate, it is their limits or
	// the pool that keep it from starting.
	offered bool
	// starting: a replica may be on its way (this broker placed one within
	// the last heartbeat, or an offering host is starting replicas).
	starting bool
}

// chooseAttach picks the attach manager to notify for svc by its scheme,
// and counts the placement.
func (r *registry) chooseAttach(svc string, now time.Time) (choice, bool) {
	return r.choose(svc, now, false, true)
}

// chooseProbe is chooseAttach for a failing service: failing managers are
// candidates too (one is asked for a probe replica).
func (r *registry) chooseProbe(svc string, now time.Time) (choice, bool) {
	return r.choose(svc, now, true, true)
}

// choose decides; with count, the decision is a placement (counted
// against the host until its next registration).
func (r *registry) choose(svc string, now time.Time, failingToo, count bool) (choice, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cands []placement.Candidate
	var refused []string
	offered, starting := false, false
	for id := range r.offers[svc] {
		ai := r.attach[id]
		if ai.Isolated || r.attachExpiredLocked(ai, now) || (ai.Failing[svc] != "" && !failingToo) {
			continue
		}
		offered = true
		h, inPool := r.pool.hosts[id]
		if inPool && h.Disabled {
			refused = append(refused, id+" disabled")
			continue
		}
		c := placement.Candidate{ID: id, Users: ai.Users, MaxUsers: ai.MaxUsers, Replicas: ai.Replicas, MaxReplicas: ai.MaxReplicas,
			MemFree: ai.MemFree, CPUPercent: ai.CPUPercent, EventsPerSec: ai.EventsPerSec, BytesPerSec: ai.BytesPerSec}
		if h.MaxReplicas > 0 {
			c.MaxReplicas = h.MaxReplicas
		}
		if h.MaxUsers > 0 {
			c.MaxUsers = h.MaxUsers
		}
		if p := r.pool.placed[id]; p.updated == ai.Updated {
			c.Placed = p.n
		}
		starting = starting || c.Placed > 0 || ai.Starting > 0
		if !c.Eligible() {
			refused = append(refused, fmt.Sprintf("%s full (%d/%d replicas, %d/%d users)", id, c.Replicas+c.Placed, c.MaxReplicas, c.Users, c.MaxUsers))
			continue
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		sort.Strings(refused)
		why := "no host offers it"
		if len(refused) > 0 {
			why = "no host can start it now: " + strings.Join(refused, ", ")
		}
		return choice{why: why, offered: offered, starting: starting}, false
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ID < cands[j].ID }) // map order is random
	scheme := r.schemeLocked(svc)
	// A host with a parked standby of the service starts nothing: its
	// manager activates the standby. It goes first, whatever the scheme.
	if parked := r.withStandbyLocked(svc, cands); len(parked) > 0 {
		i, why := r.pool.chooser.Choose(scheme, parked)
		ai := r.attach[parked[i].ID]
		if count {
			r.pool.last[svc] = lastPlacement{host: ai.ID, at: now}
		}
		return choice{attach: ai, why: "standby: " + ai.ID + " has a parked standby (" + why + ")", offered: true}, true
	}
	if lp, ok := r.pool.last[svc]; count && ok && now.Sub(lp.at) < stickFor && !r.lastReg[svc].After(lp.at) {
		for _, c := range cands {
			if c.ID == lp.host {
				// Work still waits for the replica just placed there: the
				// same host decides whether it needs more.
				return choice{attach: r.attach[c.ID], why: fmt.Sprintf("%s: %s, which is starting a replica for this work", scheme, c.ID), offered: true}, true
			}
		}
	}
	i, why := r.pool.chooser.Choose(scheme, cands)
	ai := r.attach[cands[i].ID]
	if count {
		p := r.pool.placed[ai.ID]
		if p.updated != ai.Updated {
			p = placedCount{updated: ai.Updated}
		}
		p.n++
		r.pool.placed[ai.ID] = p
		r.pool.last[svc] = lastPlacement{host: ai.ID, at: now}
	}
	return choice{attach: ai, why: why, offered: true}, true
}

// withStandbyLocked returns the candidates whose manager reports a parked
// standby of svc.
func (r *registry) withStandbyLocked(svc string, cands []placement.Candidate) []placement.Candidate {
	var out []placement.Candidate
	for _, c := range cands {
		if r.attach[c.ID].Standby[svc] > 0 {
			out = append(out, c)
		}
	}
	return out
}

// Placement returns the scheme svc is placed by.
func (b *Broker) Placement(svc string) placement.Scheme {
	b.reg.mu.Lock()
	defer b.reg.mu.Unlock()
	return b.reg.schemeLocked(svc)
}
