package attach

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/attach/internal/logrot"
	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/broker/proto"
)

// hungStopGrace is the grace a replica gets when the manager stops it for
// a missed start timeout or stopped heartbeats.
const hungStopGrace = time.Second

// supervise is the one goroutine that owns replica r once it runs: it waits
// for the replica to exit, or stops it when checkReplicas or Shutdown asks,
// and then decides what follows.
func (m *Manager) supervise(r *replicaRun) {
	defer m.replicas.Done()
	p := r.proc
	select {
	case <-p.Done():
	case <-r.stopReq:
		grace := hungStopGrace
		if r.quiesce { // set before stopReq was closed
			grace = m.cfg.Host.Grace + stopMargin
		}
		p.Stop(m.killCtx, grace)
	case <-m.stopCh:
		p.Stop(m.killCtx, m.cfg.Host.Grace+stopMargin)
	}
	select {
	case <-p.Done():
	default:
		// It outlived SIGKILL and a bounded wait (uninterruptible sleep):
		// keep its state record, so the next run tries again.
		m.log.Error("replica survived SIGKILL; left for the next run", "replica", r.id, "pid", p.PID())
		m.mu.Lock()
		m.dropRepLocked(r)
		m.mu.Unlock()
		return
	}
	m.reaped(r, p.Exit())
}

// reaped takes the exit of replica r: it removes its records and counts
// how it ended, owes a restart if the policy says so and keeps min.
func (m *Manager) reaped(r *replicaRun, st proc.ExitStatus) {
	if err := m.state.Remove(r.id); err != nil {
		m.log.Warn("state record not removed", "replica", r.id, "err", err)
	}
	// The registration may not have reached the watcher before a quick
	// crash: the record itself says whether it registered. A dead
	// replica's record goes at once, so no broker counts it any more.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if _, err := m.repKV.Get(ctx, r.id); err == nil {
		m.mu.Lock()
		r.registered = true
		m.mu.Unlock()
		_ = m.repKV.Delete(ctx, r.id)
	}
	cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropRepLocked(r)
	m.retireLocked(r)
	s := r.svc
	s.stats.Exited++
	s.stats.LastExit = st.String()
	log := m.log.With("service", s.cfg.Service, "replica", r.id, "status", st.String())
	switch {
	case m.stopping:
		log.Info("replica stopped")
		return
	case r.quiesce:
		log.Info("replica quiesced", "reason", r.stopReason)
		return
	case r.stopReason != "":
		log.Warn("replica stopped", "reason", r.stopReason)
		if !r.registered {
			// A start timeout already cost the waiting callers that long:
			// tell them now rather than after more attempts.
			s.failures = max(s.failures, m.opts.FailAfter-1)
			m.startFailedLocked(s, r.stopReason)
		} else {
			s.stats.Hung++
		}
	case !r.registered:
		if s.failing != "" {
			log.Info("probe replica failed to start; service still failing")
		} else {
			log.Warn("replica failed to start")
		}
		m.startFailedLocked(s, fmt.Sprintf("replica exited (%s) before it registered", st))
	case r.standby:
		// A parked standby that exits is replaced by a standby
		// (keepStandbyLocked below), not restarted as a serving replica;
		// a crashing one waits out the backoff like any crash.
		if st.Code != 0 {
			s.stats.Crashed++
			s.crashes++
			m.backoffLocked(s)
			log.Warn("standby crashed")
		} else {
			log.Info("standby exited")
		}
	case st.Code != 0:
		s.stats.Crashed++
		log.Warn("replica crashed")
		if s.cfg.Restart != RestartNever {
			s.crashes++
			m.backoffLocked(s)
			s.restarts++ // checkReplicas starts it once the backoff allows
		}
	default:
		log.Info("replica exited")
		s.crashes = 0
		if s.cfg.Restart == RestartAlways {
			s.restarts++
		}
	}
	m.keepMinLocked(s)
	m.keepStandbyLocked(s)
	m.kickLocked()
}

// startFailedLocked counts a failed start; after FailAfter in a row the
// service is failing and its waiting callers are told why (via the
// registration, which brokers read).
func (m *Manager) startFailedLocked(s *svcRun, why string) {
	s.failures++
	s.stats.StartFailed++
	m.backoffLocked(s)
	if s.failures >= m.opts.FailAfter && s.failing == "" {
		s.failing, s.lastProbe = why, time.Now() // the first probe follows in probeInterval
		m.log.Error("service failing", "service", s.cfg.Service, "reason", why, "failures", s.failures)
	}
	m.kickLocked()
}

// backoffLocked delays the next start: 100ms doubling per failure in a
// row, at most 30s, with ±20% jitter.
func (m *Manager) backoffLocked(s *svcRun) {
	d := 100 * time.Millisecond << min(max(s.failures+s.crashes-1, 0), 9)
	d = min(d, 30*time.Second)
	d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	s.lastFail = time.Now()
	s.nextStart = s.lastFail.Add(d)
}

// onReplicaRecord takes one registration write: registered means started,
// and each record is a heartbeat.
func (m *Manager) onReplicaRecord(e jetstream.KeyValueEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	put := e.Operation() == jetstream.KeyValuePut
	r := m.reps[e.Key()]
	var info proto.ReplicaInfo
	var err error
	if put && (r != nil || m.serving != nil) { // decoded only when someone reads it
		info, err = proto.DecodeReplicaInfo(e.Value())
	}
	if m.serving != nil && err == nil { // a service here keeps standbys (standby.go)
		rec := &info
		if !put {
			rec = nil
		}
		if s := m.followServingLocked(e.Key(), rec); s != nil {
			defer m.armStandbysLocked(s, time.Now()) // after the record is taken: a standby's first registers it
		}
	}
	if !put || r == nil {
		return
	}
	if err == nil {
		r.last, r.active, r.recPID = info.Stats, info.Active, info.PID
		r.armable, r.armReported = info.Arm != "", info.Arm
		if r.standby && info.State != proto.StateStandby {
			// Activated by work on the standby subject: it serves now,
			// and checkReplicas starts the next standby behind it.
			r.standby = false
			m.log.Info("standby activated by work", "service", r.svc.cfg.Service, "replica", r.id)
			m.kickLocked()
		}
	}
	untouched := err == nil && info.Active == 0 && info.Stats.Conversations == 0
	switch {
	case !untouched:
		r.untouched = time.Time{}
	case r.untouched.IsZero() && !r.registered:
		r.untouched = time.Now()
	}
	if !r.registered {
		m.observeStartLocked(r, info, err, time.Now())
		// A replica that registers proves the program starts: the service
		// is healthy again, whatever crashed before.
		r.registered = true
		r.svc.failures, r.svc.crashes, r.svc.failing, r.svc.nextStart = 0, 0, "", time.Time{}
		m.log.Info("replica registered", "service", r.svc.cfg.Service, "replica", r.id, "after", time.Since(r.started).Round(time.Millisecond))
		m.kickLocked()
	}
	r.lastBeat = time.Now()
	r.pingFails, r.pingAnswered = 0, false
}

// loop enforces start timeouts and heartbeats, keeps min replicas, caps
// the logs and rewrites the registration, until ctx ends.
func (m *Manager) loop(ctx context.Context) {
	defer m.wg.Done()
	hb := time.NewTicker(m.cfg.Host.Heartbeat)
	defer hb.Stop()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	lastCap := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
			m.checkReplicas()
			if time.Since(lastCap) > 30*time.Second {
				lastCap = time.Now()
				m.capLogs()
			}
			continue
		case <-hb.C:
			m.sample() // per heartbeat only: a kick may come with every start
		case <-m.kick:
		}
		rctx, cancel := context.WithTimeout(ctx, m.cfg.Host.Heartbeat)
		if err := m.register(rctx); err != nil && ctx.Err() == nil {
			m.log.Warn("registration not written", "err", err)
		}
		cancel()
	}
}

// checkReplicas has replicas stopped that do not register in time, or whose
// heartbeats stopped and that do not answer PINGs while the process lives
// (liveness.go), and starts owed restarts and replicas for min.
func (m *Manager) checkReplicas() {
	now := time.Now()
	hung := 3 * m.cfg.Host.Heartbeat
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.reps {
		if r.stopReason != "" || r.proc == nil {
			continue // already being stopped, or still being spawned
		}
		switch {
		case !r.registered && now.Sub(r.started) > r.svc.cfg.StartTimeout:
			r.stopReason = fmt.Sprintf("did not register within the start timeout (%v)", r.svc.cfg.StartTimeout)
		case r.registered && now.Sub(r.lastBeat) > hung:
			// The store's silence is not proof: ask the replica itself.
			if r.pingFails < hungAfterPings {
				m.pingIfDueLocked(r, now)
				continue
			}
			r.stopReason = fmt.Sprintf("heartbeats stopped for %v and %d PINGs in a row went unanswered while the process lives",
				now.Sub(r.lastBeat).Round(time.Millisecond), r.pingFails)
		default:
			continue
		}
		close(r.stopReq) // its supervisor stops it and records the outcome
	}
	for _, s := range m.svcs {
		if s.restarts > 0 && !now.Before(s.nextStart) {
			starting, running := m.countLocked(s)
			_, standby := m.standbyLocked(s)
			room := s.cfg.Max - starting - running - standby
			n := m.reserveLocked(s, min(s.restarts, room, m.maxReplicasLocked()-len(m.reps)), "restart")
			s.restarts -= n
			if room <= n {
				s.restarts = 0 // at max: the broker asks again if work waits
			}
		}
		m.keepMinLocked(s)
		m.keepStandbyLocked(s)
		m.armStandbysLocked(s, now)
		m.probeIfDueLocked(s, now)
	}
}

// capLogs keeps the log dir within its total size.
func (m *Manager) capLogs() {
	m.mu.Lock()
	open := map[string]bool{m.ownLogPath(): true}
	for _, r := range m.reps {
		open[m.logPath(r.svc.cfg.Service, r.id)] = true
	}
	m.mu.Unlock()
	if _, err := logrot.EnforceCap(m.cfg.Host.LogDir, m.cfg.Host.LogTotalBytes, open); err != nil {
		m.log.Warn("log cap", "err", err)
	}
}

// kickLocked has loop rewrite the registration soon.
func (m *Manager) kickLocked() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}
