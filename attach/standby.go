package attach

import (
	"syscall"
	"time"
)

// Standby replicas ("standby: N" in a service's config): the manager keeps
// N replicas of the service started, connected and parked (MUSTER_STANDBY=1,
// worker/standby.go). They count towards the service's max and the host's
// max_replicas (they are processes), but not towards min, the clamp of a
// notification, or any figure of the service until they serve. Work reaches
// a standby two ways: a client's call on the standby subject activates it
// directly (its record then says "ready"), or a notification from a broker
// activates parked standbys (SIGUSR1) before any process is started; either
// way the next check starts a new standby behind it.

// standbyLocked returns the standbys of s that are parked (registered,
// running, not being stopped) and all of them (parked or still starting).
func (m *Manager) standbyLocked(s *svcRun) (parked, all int) {
	for _, r := range s.reps {
		if !r.standby {
			continue
		}
		all++
		if r.registered && r.proc != nil && r.stopReason == "" {
			parked++
		}
	}
	return parked, all
}

// activateLocked activates up to k parked standbys of s and returns how
// many it activated. An activated standby counts as a replica on its way
// to the waiting work (untouched from now) until its record says it took
// something.
func (m *Manager) activateLocked(s *svcRun, k int) int {
	n := 0
	for _, r := range s.reps {
		if n >= k {
			break
		}
		if !r.standby || !r.registered || r.proc == nil || r.stopReason != "" {
			continue
		}
		if err := r.proc.Signal(syscall.SIGUSR1); err != nil {
			m.log.Warn("standby not activated", "service", s.cfg.Service, "replica", r.id, "err", err)
			continue
		}
		r.standby, r.untouched = false, time.Now()
		s.stats.Activated++
		m.log.Info("standby activated", "service", s.cfg.Service, "replica", r.id)
		n++
	}
	if n > 0 {
		m.kickLocked()
	}
	return n
}

// keepStandbyLocked starts standbys until s has its standby count, within
// the service's max and the host's limit. Not while the service is failing:
// its probes are enough.
func (m *Manager) keepStandbyLocked(s *svcRun) {
	if s.cfg.Standby == 0 || s.failing != "" {
		return
	}
	starting, running := m.countLocked(s)
	_, all := m.standbyLocked(s)
	k := min(s.cfg.Standby-all, s.cfg.Max-starting-running-all, m.maxReplicasLocked()-len(m.reps))
	if k > 0 && !time.Now().Before(s.nextStart) {
		m.reserveKindLocked(s, k, "standby", true)
	}
}
