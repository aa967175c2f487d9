package attach

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// A failing service heals by itself: while it is failing, the manager
// starts one probe replica every probeInterval (whatever the backoff, and
// whether or not the broker asks), so a program fixed on disk comes back
// within probeInterval plus its start time, with no call and no operator.
// The first probe that registers clears failing. `muster service reset`
// (onReset) does the same at once.
const probeInterval = 5 * time.Second

// probeIfDueLocked starts a probe replica of failing service s when the
// last start of it is probeInterval old and none is starting or running.
func (m *Manager) probeIfDueLocked(s *svcRun, now time.Time) {
	if s.failing == "" || now.Sub(s.lastProbe) < probeInterval {
		return
	}
	if starting, running := m.countLocked(s); starting+running > 0 {
		return
	}
	if n := m.reserveNowLocked(s, min(1, s.cfg.Max, m.maxReplicasLocked()-len(m.reps)), "probe of a failing service"); n > 0 {
		m.log.Info("probing failing service", "service", s.cfg.Service, "reason", s.failing)
	}
}

// onReset answers muster.attach.reset.C.N.S for a service in the config:
// it forgets the service's failures (failing, the failure and crash counts,
// the backoff), starts one probe replica unless one is starting or running,
// rewrites the registration so brokers stop answering 0900/0004, and then
// answers with an AttachReset. A service it does not offer gets no answer
// (another manager's), nor does anything while the manager stops.
func (m *Manager) onReset(msg *nats.Msg) {
	svc, err := proto.ServiceFromTokens(msg.Subject)
	if err != nil {
		return
	}
	m.mu.Lock()
	s := m.svcs[svc.String()]
	if s == nil || m.stopping {
		m.mu.Unlock()
		return
	}
	m.replicas.Add(1) // Shutdown waits for the registration written below
	defer m.replicas.Done()
	rep := proto.AttachReset{Attach: m.id, Service: s.cfg.Service, WasFailing: s.failing}
	s.failing, s.failures, s.crashes, s.nextStart, s.lastFail = "", 0, 0, time.Time{}, time.Time{}
	if starting, running := m.countLocked(s); starting+running == 0 {
		rep.Probe = m.reserveNowLocked(s, min(1, s.cfg.Max, m.maxReplicasLocked()-len(m.reps)), "probe after muster service reset") > 0
	}
	m.mu.Unlock()
	m.log.Info("service reset", "service", rep.Service, "was_failing", rep.WasFailing, "probe", rep.Probe)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.register(ctx); err != nil {
		m.log.Warn("registration not written after a reset", "err", err)
	}
	if msg.Reply != "" {
		b, _ := json.Marshal(rep)
		_ = msg.Respond(b)
	}
}
