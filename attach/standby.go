package attach

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/musterhq/muster/broker/proto"
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
		if !r.standby || !r.registered || r.stopReason != "" || !r.signalable() {
			continue
		}
		if err := r.proc.SignalLeader(syscall.SIGUSR1, nil); err != nil {
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

// Arming (worker/standby.go, PROTOCOL §6.13). A client's call reaches a
// parked standby only after the warm subject answered "no responders",
// a round trip of 0.24–0.45 ms in a sub-millisecond first reply (bench
// standby). So while a service has no serving replica on any host, the
// manager arms its parked standbys: they take the warm subject too, and
// the client's first request activates one directly. When a serving
// replica appears, it disarms them. The view is the replica records the
// manager follows anyway (serving: ready records of services with
// standbys, dropped when deleted, quiescing, standby, or three of their
// heartbeats old), read whole from the bucket once at start
// (seedServing). It may be stale; that costs little either way: an armed
// standby next to a serving replica only activates early, on work, and a
// disarmed one is reached after the 503 as before. Only standbys whose
// record says they take SIGUSR2 are signalled (its default action ends a
// program that does not), and only their own process (signalable).

// servingRec is one serving replica in the manager's view.
type servingRec struct {
	svc   string
	until time.Time // stale after this: three of its heartbeats
}

// followServingLocked takes the replica record under key (nil: deleted)
// into the view of serving replicas and returns the service it concerns,
// if that keeps standbys here (nil otherwise).
func (m *Manager) followServingLocked(key string, info *proto.ReplicaInfo) *svcRun {
	if m.touched != nil {
		m.touched[key] = true // seedServing leaves it: this is newer
	}
	if info == nil {
		old, ok := m.serving[key]
		delete(m.serving, key)
		if !ok {
			return nil
		}
		return m.svcs[old.svc]
	}
	s := m.svcs[info.Service]
	if s == nil || s.cfg.Standby == 0 {
		return nil
	}
	if info.State != proto.StateReady {
		delete(m.serving, key)
		return s
	}
	hb := time.Duration(info.HeartbeatMS) * time.Millisecond
	if hb <= 0 {
		hb = m.cfg.Host.Heartbeat
	}
	m.serving[key] = servingRec{svc: info.Service, until: time.Now().Add(3 * hb)}
	return s
}

// servingLocked reports whether the view holds a serving replica of svc.
// Stale entries are dropped on the way.
func (m *Manager) servingLocked(svc string, now time.Time) bool {
	found := false
	for k, rec := range m.serving {
		switch {
		case now.After(rec.until):
			delete(m.serving, k)
		case rec.svc == svc:
			found = true
		}
	}
	return found
}

// armStandbysLocked arms the parked standbys of s while the service has no
// serving replica, and disarms them when it has one: it writes the wanted
// state into each one's arm file, then signals SIGUSR2 to that process
// alone. A standby whose record still says otherwise a heartbeat later is
// signalled again, up to armTries times per change.
func (m *Manager) armStandbysLocked(s *svcRun, now time.Time) {
	if s.cfg.Standby == 0 || m.serving == nil {
		return
	}
	want := m.viewCompleteLocked(now) && !m.servingLocked(s.cfg.Service, now)
	wantArm := proto.ArmOff
	if want {
		wantArm = proto.ArmOn
	}
	for _, r := range s.reps {
		if !r.standby || !r.armable || !r.registered || r.stopReason != "" || !r.signalable() {
			continue
		}
		if r.armed != want {
			r.armed, r.armTries = want, 0
		} else if r.armReported == wantArm || r.armTries >= armTries || now.Sub(r.armSent) < m.cfg.Host.Heartbeat {
			continue // done, given up, or asked a moment ago
		}
		r.armTries++
		r.armSent = now
		file := filepath.Join(m.cfg.Host.TempDir, r.id, StandbyArmFile)
		err := r.proc.SignalLeader(syscall.SIGUSR2, func() error {
			if want {
				return os.WriteFile(file, []byte("1\n"), 0o600)
			}
			if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil // no file: disarmed
		})
		if err != nil {
			m.log.Warn("standby arming not changed", "service", s.cfg.Service, "replica", r.id, "armed", want, "err", err)
			continue
		}
		m.log.Debug("standby arming changed", "service", s.cfg.Service, "replica", r.id, "armed", want, "try", r.armTries)
	}
}

// armTries bounds the SIGUSR2s per change of a standby's arming that its
// record does not confirm (a standby that cannot subscribe says so in its
// log at each).
const armTries = 3

// signalable reports whether r's own process is the one that registered
// (its record's pid): a signal then reaches the replica itself. The
// replica of a wrapper that does not exec (a shell script) is never
// signalled: the signal's default action would end the wrapper.
func (r *replicaRun) signalable() bool { return r.proc != nil && r.recPID == r.proc.PID() }

// viewCompleteLocked reports whether the view of serving replicas holds
// every live record: filled from the bucket at start (seedServing), or,
// if that failed, followed for two of the manager's heartbeats.
func (m *Manager) viewCompleteLocked(now time.Time) bool {
	return m.seeded || now.Sub(m.viewFrom) >= 2*m.cfg.Host.Heartbeat
}

// seedServing fills the view of serving replicas from the bucket, once,
// after the follower has started: a record the follower has delivered
// meanwhile is newer and stays. Without it the view would be complete
// only after the longest heartbeat of any replica (up to a day for one
// started by hand).
func (m *Manager) seedServing(ctx context.Context) {
	m.mu.Lock()
	if m.serving == nil {
		m.mu.Unlock()
		return
	}
	m.touched = map[string]bool{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.touched = nil
		m.mu.Unlock()
	}()
	keys, err := m.repKV.ListKeys(ctx)
	if err != nil {
		m.log.Warn("replica records not read; standbys are armed two heartbeats from now", "err", err)
		return
	}
	for k := range keys.Keys() {
		e, err := m.repKV.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile, or unreadable: the follower has it
		}
		info, err := proto.DecodeReplicaInfo(e.Value())
		if err != nil {
			continue
		}
		m.mu.Lock()
		if !m.touched[k] {
			m.followServingLocked(k, &info)
		}
		m.mu.Unlock()
	}
	if ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	m.seeded = true
	m.mu.Unlock()
}
