package worker

import (
	"context"
	"sort"
	"time"

	"github.com/musterhq/muster/broker/proto"
)

// The idle timeout: a replica with no conversation for cfg.idleTimeout
// quiesces and exits, unless it is one of the cfg.minReplicas
// longest-running replicas of its service.

// armIdleLocked (re)starts the idle timer when no conversation is open.
func (r *replica) armIdleLocked() {
	if r.cfg.idleTimeout <= 0 || r.active > 0 || r.state != stateReady {
		return
	}
	if r.idle == nil {
		r.idle = time.AfterFunc(r.cfg.idleTimeout, r.onIdle)
	} else {
		r.idle.Reset(r.cfg.idleTimeout)
	}
}

// onIdle runs (on the timer's goroutine, which it makes a helper of the
// replica for shutdown to wait for) when the idle timeout passes with no
// conversation: exit, unless this replica is among the min oldest.
func (r *replica) onIdle() {
	r.mu.Lock()
	if r.active > 0 || r.state != stateReady {
		r.mu.Unlock()
		return
	}
	r.helpers.addLocked()
	r.mu.Unlock()
	defer r.doneWith(&r.helpers)
	if r.cfg.minReplicas > 0 && r.amongOldest(r.cfg.minReplicas) {
		r.mu.Lock()
		r.armIdleLocked()
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active == 0 {
		r.quiesceLocked("idle timeout")
	}
}

// amongOldest reports whether this replica is one of the n oldest live,
// ready replicas of its service. Every replica sorts the same records the
// same way, so exactly the n oldest stay.
func (r *replica) amongOldest(n int) bool {
	ctx, cancel := context.WithTimeout(r.baseCtx, 5*time.Second)
	defer cancel()
	kv, err := r.bucket(ctx)
	if err != nil {
		return true // cannot tell: stay, the safe side of a minimum
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return true
	}
	var live []proto.ReplicaInfo
	now := time.Now()
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		ri, err := proto.DecodeReplicaInfo(e.Value())
		if err != nil || ri.Service != r.cfg.service.String() || ri.State != proto.StateReady || ri.Expired(now) {
			continue
		}
		live = append(live, ri)
	}
	sort.Slice(live, func(i, j int) bool {
		if live[i].Started != live[j].Started {
			return live[i].Started < live[j].Started
		}
		return live[i].ID < live[j].ID
	})
	for i := 0; i < len(live) && i < n; i++ {
		if live[i].ID == r.cfg.replicaID {
			return true
		}
	}
	return false
}
