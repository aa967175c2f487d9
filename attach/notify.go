package attach

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// maxPerNotification is the most replicas one notification starts
// (EntireX's clamp of nAttach).
const maxPerNotification = 100

// onNotify acts on an attach notification: start replicas, clamped the
// EntireX way (missing taken within 1..100, then at most max − started),
// and never past the service's or the host's limit. Requests beyond the
// limits wait in the queue until a replica frees up or their deadline.
//
// It only reserves under the lock (reserved replicas count as starting, so
// the next notification's clamp sees them); the spawning happens outside
// it (see reserveLocked).
func (m *Manager) onNotify(msg *nats.Msg) {
	n, err := proto.DecodeNotification(msg.Data)
	if err != nil {
		m.log.Warn("bad attach notification ignored", "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Fencing: a broker deposed as leader (an older lease epoch) that has
	// not noticed yet must not have work started twice.
	s := m.svcs[n.Service]
	if n.Lease != 0 {
		if n.Lease < m.maxLease {
			m.log.Info("notification from a deposed leader ignored", "broker", n.Broker, "lease", n.Lease, "current", m.maxLease)
			if s != nil {
				s.stats.Fenced++
			}
			return
		}
		m.maxLease = n.Lease
	}
	if s == nil || m.isolated || m.stopping {
		return
	}
	why := "asked by broker " + n.Broker
	if n.Placement != "" {
		why += ": " + n.Placement
	}
	m.reserveDemandLocked(s, m.clampLocked(s, n), why)
}

// demandBackoffCap is the longest the restart backoff (up to 30 s) delays a
// start the broker asks for: work waits, so at most this long after the
// last failure the manager tries again (one probe at a time while the
// service is failing).
const demandBackoffCap = 2 * time.Second

// reserveDemandLocked reserves up to k replicas the broker asked for: the
// backoff applies, but for at most demandBackoffCap after the last failure.
func (m *Manager) reserveDemandLocked(s *svcRun, k int, why string) int {
	if now := time.Now(); now.Before(s.nextStart) && now.Before(s.lastFail.Add(demandBackoffCap)) {
		return 0
	}
	return m.reserveNowLocked(s, k, why)
}

// clampLocked is how many replicas of s notification n starts.
func (m *Manager) clampLocked(s *svcRun, n proto.Notification) int {
	// How many replicas the waiting work needs, less those on their way.
	// The broker's "missing" only counts requests since its last
	// notification; the queue depth is the better measure of a burst.
	starting, running := m.countLocked(s)
	want := n.Missing
	if need := (n.Pending+s.cfg.Capacity-1)/s.cfg.Capacity - starting; need > 0 || starting > 0 {
		want = need
	}
	if starting == 0 && want < 1 {
		want = 1 // EntireX: an nAttach below 1 counts as 1
	}
	want = min(want, maxPerNotification)
	// Parked standbys take the work first: no process to start.
	want -= m.activateLocked(s, want)
	_, standby := m.standbyLocked(s)
	k := min(want, s.cfg.Max-starting-running-standby, m.maxReplicasLocked()-len(m.reps))
	if s.failing != "" {
		k = min(k, 1) // one probe at a time while failing
	}
	return max(k, 0)
}

// untouchedGrace is how long after registering a replica whose record
// says it took nothing yet still counts as on its way to the waiting work.
const untouchedGrace = time.Second

// countLocked returns the service's replicas on their way to the waiting
// work (reserved, spawned but not registered, or registered less than
// untouchedGrace ago without having taken anything yet) and the others.
//
// A replica registers before it pulls, so for a moment the request that
// started it still waits in the queue while the replica counts as
// running: a re-notification in that moment would otherwise start a
// second replica for one request.
func (m *Manager) countLocked(s *svcRun) (starting, running int) {
	if len(s.reps) == 0 {
		return 0, 0
	}
	now := time.Now()
	for _, r := range s.reps {
		if r.standby {
			continue // a standby serves nothing until activated (standbyLocked)
		}
		if r.registered && (r.untouched.IsZero() || now.Sub(r.untouched) > untouchedGrace) {
			running++
		} else {
			starting++
		}
	}
	return starting, running
}

// keepMinLocked reserves replicas until the service has its min.
func (m *Manager) keepMinLocked(s *svcRun) {
	if s.cfg.Min == 0 {
		return
	}
	starting, running := m.countLocked(s)
	m.reserveLocked(s, min(s.cfg.Min-starting-running, m.maxReplicasLocked()-len(m.reps)), "min")
}
