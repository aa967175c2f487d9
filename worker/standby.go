package worker

import (
	"fmt"

	"github.com/musterhq/muster/broker/proto"
)

// Standby replicas (MUSTER_STANDBY=1, WithStandby): an attach manager keeps
// some replicas of a service started, connected and ready but not serving,
// so that work finds a process that has already paid for its start. A
// standby is subscribed only to the service's standby subject (queue group
// muster, into the same buffer as the warm path) and its own subjects; it
// is registered with state "standby", which no broker figure counts; it
// holds no slot, does not pull queued work, has no idle timer and no
// progress tick, so once parked it uses no CPU but its registration
// heartbeat.
//
// It becomes a serving replica (activate) when a call or NEW arrives on
// the standby subject (a client tries it after a 503 on the warm subject)
// or when the attach manager that started it sends SIGUSR1 (the broker
// asked for a replica: the standby then pulls the queued work). Activation
// joins the warm path, pulls, arms the idle timer and rewrites the
// registration as "ready". A standby whose connection drops is
// re-subscribed by nats.go when it comes back; one whose connection is
// closed exits, and its manager starts another.

// parkLocked subscribes the standby subject and enters the standby state.
func (r *replica) parkLocked() error {
	s, err := r.nc.ChanQueueSubscribe(proto.StandbySubject(r.cfg.service), proto.WarmQueue, r.warmCh)
	if err != nil {
		return fmt.Errorf("worker: subscribe standby subject: %w", err)
	}
	r.standbySub, r.state = s, stateStandby
	r.parked.Store(true)
	return nil
}

// unparkLocked leaves the standby subject; requests already on their way
// still reach the buffer (drain) and are served or forwarded.
func (r *replica) unparkLocked() {
	if r.standbySub != nil {
		_ = r.standbySub.Drain()
		r.standbySub = nil
	}
}

// isStandby costs the warm path an atomic load, not a lock.
func (r *replica) isStandby() bool { return r.parked.Load() }

// activate makes a standby a serving replica and joins it to the warm
// path and the queue (join). It is idempotent.
func (r *replica) activate(why string) {
	if r.activateOnly(why) {
		r.join()
	}
}

// activateOnly makes a standby a serving replica that can accept work,
// and reports whether it was a standby. The caller joins it (join) once
// it has served the request in hand: the first reply does not wait for
// the subscriptions and the pull.
func (r *replica) activateOnly(why string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != stateStandby {
		return false
	}
	r.state = stateReady
	r.parked.Store(false)
	r.activatedWhy = why
	close(r.activated) // the heartbeat loop logs it, off the first request's path
	r.joinPending = true
	// The registration says "ready" at the next progress tick (≤ 100 ms),
	// not now: its write (and the new standby the manager then starts)
	// would compete with the first reply for the CPU.
	r.dirty.Store(true)
	return true
}

// join leaves the standby subject and takes work as any ready replica:
// the warm path, the pull, the idle timer (each only if a slot is free).
func (r *replica) join() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joinPending = false
	if r.state != stateReady {
		return // quiescing already (exit after the first conversation)
	}
	r.unparkLocked()
	r.joinWarmLocked()
	r.pullLocked()
	r.armIdleLocked()
}
