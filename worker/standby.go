package worker

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

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
// still reach the buffer (drain) and are served or forwarded. An armed
// standby's warm subscriptions become the replica's warm path if it may
// take warm work now (activated, a slot free), else they are left too.
func (r *replica) unparkLocked() {
	if r.standbySub != nil {
		_ = r.standbySub.Drain()
		r.leftLocked(r.standbySub)
		r.standbySub = nil
	}
	if r.armedWarm == nil {
		return
	}
	if r.mayJoinWarmLocked() {
		r.warm, r.warmNew = r.armedWarm, r.armedNew
		r.armedWarm, r.armedNew = nil, nil
		return
	}
	r.disarmLocked()
}

// Arming (MUSTER_STANDBY_ARM, SIGUSR2; PROTOCOL §6.13). A client reaches a
// parked standby only after the warm subject answered "no responders"
// (0.24–0.45 ms of a sub-millisecond call here, bench standby). The
// attach manager, which follows every registration, arms its parked
// standbys while the service has no serving replica: an armed standby
// also takes the warm subject and the bare-NEW subject (queue group
// muster, the same buffer), so the client's first request reaches it and
// activates it. When a serving replica appears the manager disarms them.
// A stale view costs little either way: an armed standby that shares the
// warm subject with serving replicas only activates early (on work), and
// a disarmed one is reached after the 503 as before. The manager writes
// the wanted state into the arm file and then signals, so signals that
// coalesce lose nothing; a file that cannot be read disarms.

// rearm reads the arm file and arms or disarms a parked standby.
func (r *replica) rearm() {
	b, err := os.ReadFile(r.cfg.armFile)
	want := err == nil && strings.TrimSpace(string(b)) == "1"
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != stateStandby {
		return
	}
	switch {
	case want == (r.armedWarm != nil): // asked again: its record did not say so yet
	case !want:
		r.disarmLocked()
	default:
		var err error
		if r.armedWarm, r.armedNew, err = r.subscribeWarmSubjects(); err != nil {
			r.cfg.logger.Warn("standby not armed; calls reach it after the warm subject's 503", "err", err)
			return
		}
	}
	r.dirty.Store(true) // the record says armed or not, now
	select {
	case r.hbKick <- struct{}{}:
	default:
	}
}

// disarmLocked leaves them; requests already on their way still reach the
// buffer and activate the standby (drain), as on the standby subject.
func (r *replica) disarmLocked() {
	for _, s := range []*nats.Subscription{r.armedWarm, r.armedNew} {
		if s != nil {
			_ = s.Drain()
		}
	}
	r.leftLocked(r.armedWarm, r.armedNew)
	r.armedWarm, r.armedNew = nil, nil
}

// leftLocked keeps the standby's subscriptions being drained, so that
// closeSubscriptions waits for them too.
func (r *replica) leftLocked(subs ...*nats.Subscription) {
	// Those drained already are done with: a standby armed and disarmed
	// over a long life keeps only the last few.
	r.standbyDrains = slices.DeleteFunc(r.standbyDrains, func(s *nats.Subscription) bool { return !s.IsValid() })
	for _, s := range subs {
		if s != nil {
			r.standbyDrains = append(r.standbyDrains, s)
		}
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
