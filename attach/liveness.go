package attach

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Liveness is judged by asking the replica, not by the store. A replica
// whose registration writes stop reaching the manager (a KV stream that
// lags after a NATS restart or a leader change, a watch that stalls) is
// only stale, not hung: the manager PINGs its private subject
// (PROTOCOL §6.6) and stops it as hung only when the process lives and
// hungAfterPings PINGs in a row go unanswered while the manager's own
// connection was up the whole time.
const (
	// pingTimeout is how long one PING waits for its answer (the Go
	// client's ping interval).
	pingTimeout = 500 * time.Millisecond
	// hungAfterPings is how many unanswered PINGs in a row make a replica
	// with stale heartbeats hung.
	hungAfterPings = 2
)

// pingInterval is how often a replica with stale heartbeats is PINGed.
func (m *Manager) pingInterval() time.Duration { return max(m.cfg.Host.Heartbeat, pingTimeout) }

// pingIfDueLocked sends replica r a PING in the background if none is in
// flight and the last one is at least pingInterval old. Never while the
// manager stops (the goroutine is counted in m.replicas, which Shutdown
// waits for).
func (m *Manager) pingIfDueLocked(r *replicaRun, now time.Time) {
	if r.pinging || m.stopping || now.Sub(r.lastPing) < m.pingInterval() {
		return
	}
	r.pinging, r.lastPing = true, now
	r.svc.stats.Pinged++
	m.replicas.Add(1)
	go m.ping(r)
}

// ping asks replica r whether it lives and records the answer.
func (m *Manager) ping(r *replicaRun) {
	defer m.replicas.Done()
	alive, counts := m.ask(r.id)
	m.mu.Lock()
	defer m.mu.Unlock()
	r.pinging = false
	switch {
	case alive:
		if !r.pingAnswered { // once per stale spell
			r.pingAnswered = true
			m.log.Info("replica's heartbeats do not arrive, but it answers PING: kept", "service", r.svc.cfg.Service, "replica", r.id,
				"since", time.Since(r.lastBeat).Round(time.Millisecond))
		}
		r.pingFails = 0
	case counts:
		r.pingFails++
		m.log.Warn("replica did not answer PING", "service", r.svc.cfg.Service, "replica", r.id, "in_a_row", r.pingFails)
	}
}

// ask sends one PING to replica id's private subject. alive: it answered
// (any answer counts, even a coded error). counts: a failure says
// something about the replica, because the manager's own connection was
// up before and after and did not reconnect in between; a PING lost to the
// manager's own outage proves nothing.
func (m *Manager) ask(id string) (alive, counts bool) {
	if !m.nc.IsConnected() {
		return false, false
	}
	reconnects := m.nc.Stats().Reconnects
	msg := nats.NewMsg(proto.ReplicaSubject(id))
	msg.Header.Set(proto.HdrOp, proto.OpPing)
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if _, err := m.nc.RequestMsgWithContext(ctx, msg); err == nil {
		return true, true
	}
	return false, m.nc.IsConnected() && m.nc.Stats().Reconnects == reconnects
}
