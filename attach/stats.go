package attach

import (
	"sort"
	"time"

	"github.com/shirou/gopsutil/v3/process"

	"github.com/musterhq/muster/broker/proto"
)

// The figures an attach manager adds to its registration for operators
// (proto.AttachInfo): its replicas' users and traffic, their processes'
// CPU and memory, and the final counters of replicas that exited. They
// are sampled once per heartbeat (sample, from loop), never on a request's
// path: a replica's own counters come from its registration record, which
// the manager already follows for liveness.

// sampled is the last sample; guarded by Manager.mu.
type sampled struct {
	at           time.Time
	events       int64 // Σ messages of live and retired replicas at the sample
	bytes        int64 // Σ bytes in + out, likewise
	eventsPerSec float64
	bytesPerSec  float64
	procs        []proto.ProcInfo
	cpu          map[string]procCPU // replica id → its CPU time at the sample
}

// procCPU is a process's CPU time (user + system, seconds) at a moment.
type procCPU struct {
	pid     int
	seconds float64
	at      time.Time
}

// sample measures the replicas' processes and the traffic rates. It reads
// /proc without the lock.
func (m *Manager) sample() {
	type one struct {
		id, svc, why string
		pid          int
		started      time.Time
	}
	m.mu.Lock()
	var live []one
	for _, r := range m.reps {
		if r.proc != nil {
			live = append(live, one{id: r.id, svc: r.svc.cfg.Service, pid: r.proc.PID(), started: r.spawned, why: r.placement})
		}
	}
	prev := m.sample0.cpu
	m.mu.Unlock()

	now := time.Now()
	cpu := make(map[string]procCPU, len(live))
	procs := make([]proto.ProcInfo, 0, len(live))
	for _, l := range live {
		pi := proto.ProcInfo{ID: l.id, Service: l.svc, PID: l.pid, Started: l.started.UnixMilli(), Placement: l.why}
		if p, err := process.NewProcess(int32(l.pid)); err == nil {
			if t, err := p.Times(); err == nil {
				c := procCPU{pid: l.pid, seconds: t.User + t.System, at: now}
				cpu[l.id] = c
				if old, ok := prev[l.id]; ok && old.pid == l.pid && now.After(old.at) {
					pi.CPUPercent = max(0, 100*(c.seconds-old.seconds)/now.Sub(old.at).Seconds())
				}
			}
			if mi, err := p.MemoryInfo(); err == nil {
				pi.RSS = mi.RSS
			}
		}
		procs = append(procs, pi)
	}
	sort.Slice(procs, func(i, j int) bool { return procs[i].ID < procs[j].ID })

	m.mu.Lock()
	defer m.mu.Unlock()
	var events, bytes int64
	for _, st := range m.retired {
		events += st.Messages
		bytes += st.BytesIn + st.BytesOut
	}
	for _, r := range m.reps {
		events += r.last.Messages
		bytes += r.last.BytesIn + r.last.BytesOut
	}
	s := &m.sample0
	if !s.at.IsZero() {
		if d := now.Sub(s.at).Seconds(); d > 0 {
			s.eventsPerSec = max(0, float64(events-s.events)/d)
			s.bytesPerSec = max(0, float64(bytes-s.bytes)/d)
		}
	}
	s.at, s.events, s.bytes, s.procs, s.cpu = now, events, bytes, procs, cpu
}

// retireLocked adds the last counters of replica r, which exited, to its
// service's retired totals.
func (m *Manager) retireLocked(r *replicaRun) {
	if r.last == (proto.Stats{}) {
		return
	}
	st := m.retired[r.svc.cfg.Service]
	st.Add(r.last)
	m.retired[r.svc.cfg.Service] = st
}

// maxUsers is the pool's override, host.max_users, or what the host's
// limits allow. The caller holds m.mu.
func (m *Manager) maxUsers() int {
	if m.pool.MaxUsers > 0 {
		return m.pool.MaxUsers
	}
	if m.cfg.Host.MaxUsers > 0 {
		return m.cfg.Host.MaxUsers
	}
	sum, largest := 0, 0
	for _, sc := range m.cfg.Services {
		sum += sc.Max * sc.Capacity
		largest = max(largest, sc.Capacity)
	}
	return min(sum, m.maxReplicasLocked()*largest)
}

// figuresLocked adds the sampled and derived figures to ai.
func (m *Manager) figuresLocked(ai *proto.AttachInfo) {
	for _, r := range m.reps {
		ai.Users += r.active
		if r.standby && r.registered && r.proc != nil && r.stopReason == "" {
			if ai.Standby == nil {
				ai.Standby = map[string]int{}
			}
			ai.Standby[r.svc.cfg.Service]++
		}
	}
	ai.MaxUsers = m.maxUsers()
	ai.EventsPerSec, ai.BytesPerSec = m.sample0.eventsPerSec, m.sample0.bytesPerSec
	ai.LogDir, ai.LogFile = m.cfg.Host.LogDir, m.ownLogPath()
	ai.Procs = append([]proto.ProcInfo(nil), m.sample0.procs...)
	if len(m.retired) > 0 {
		ai.Retired = make(map[string]proto.Stats, len(m.retired))
		for k, v := range m.retired {
			ai.Retired[k] = v
		}
	}
}

// replicaFigure is one running replica's figures for metrics.
type replicaFigure struct {
	id, service string
	active      int
	stats       proto.Stats
	cpuPercent  float64
	rss         uint64
}

// replicaFigures returns the figures of the replicas that run (spawned),
// from their latest records and the last sample; and per service, the
// totals of its live and retired replicas.
func (m *Manager) replicaFigures() ([]replicaFigure, map[string]proto.Stats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	procs := map[string]proto.ProcInfo{}
	for _, p := range m.sample0.procs {
		procs[p.ID] = p
	}
	totals := map[string]proto.Stats{}
	for svc, st := range m.retired {
		totals[svc] = st
	}
	out := make([]replicaFigure, 0, len(m.reps))
	for _, r := range m.reps {
		if r.proc == nil {
			continue
		}
		p := procs[r.id]
		out = append(out, replicaFigure{id: r.id, service: r.svc.cfg.Service, active: r.active, stats: r.last, cpuPercent: p.CPUPercent, rss: p.RSS})
		t := totals[r.svc.cfg.Service]
		t.Add(r.last)
		totals[r.svc.cfg.Service] = t
	}
	for _, sc := range m.cfg.Services {
		if _, ok := totals[sc.Service]; !ok {
			totals[sc.Service] = proto.Stats{}
		}
	}
	return out, totals
}
