package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/nats-io/nuid"

	"github.com/musterhq/muster/attach/internal/logrot"
	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/attach/internal/statedir"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/natsconn"
)

// errStopping ends a spawn that the manager's shutdown overtook.
var errStopping = errors.New("attach: manager stopping")

// reserveLocked reserves up to k replicas of s, unless the manager stops or
// the service's restart backoff runs, and returns how many it reserved.
// It is how restarts and min start replicas; the starts the broker asks
// for go through reserveDemandLocked, probes through reserveProbeLocked. A
// reserved replica is in m.reps at once, so it counts towards every clamp;
// one spawner goroutine then starts the batch in turn without the lock
// (log file, fork/exec, the state record's fsync) and commits each under it.
func (m *Manager) reserveLocked(s *svcRun, k int, why string) int {
	if time.Now().Before(s.nextStart) {
		return 0
	}
	return m.reserveNowLocked(s, k, why)
}

// reserveNowLocked reserves up to k replicas of s whatever the backoff,
// unless the manager stops or the host is isolated. While s is failing, each reservation is a
// probe and sets the probe schedule.
func (m *Manager) reserveNowLocked(s *svcRun, k int, why string) int {
	return m.reserveKindLocked(s, k, why, false)
}

// reserveKindLocked is reserveNowLocked for serving replicas (standby
// false) or standby ones.
func (m *Manager) reserveKindLocked(s *svcRun, k int, why string, standby bool) int {
	if k <= 0 || m.stopping || m.isolated {
		return 0 // an isolated host starts nothing, not even min or probes
	}
	now := time.Now()
	if s.failing != "" {
		s.lastProbe = now
	}
	batch := make([]*replicaRun, k)
	for i := range batch {
		r := &replicaRun{id: nuid.Next(), svc: s, started: now, stopReq: make(chan struct{}), placement: why, standby: standby}
		m.addRepLocked(r)
		batch[i] = r
	}
	m.replicas.Add(1)
	go m.spawnBatch(batch)
	m.kickLocked()
	return k
}

// addRepLocked enters replica r in the manager's replicas and its
// service's.
func (m *Manager) addRepLocked(r *replicaRun) {
	m.reps[r.id] = r
	if r.svc.reps == nil {
		r.svc.reps = map[string]*replicaRun{}
	}
	r.svc.reps[r.id] = r
}

// dropRepLocked removes replica r from both.
func (m *Manager) dropRepLocked(r *replicaRun) {
	delete(m.reps, r.id)
	delete(r.svc.reps, r.id)
}

// spawnBatch spawns a batch of reserved replicas in turn. After a failure
// the rest of the batch is released: the failure sets the backoff, and the
// broker asks again if work still waits.
func (m *Manager) spawnBatch(batch []*replicaRun) {
	defer m.replicas.Done()
	for i, r := range batch {
		p, err := m.spawn(r)
		m.mu.Lock()
		if err != nil {
			for _, rest := range batch[i:] {
				m.dropRepLocked(rest)
			}
			if !errors.Is(err, errStopping) {
				m.startFailedLocked(r.svc, err.Error())
			}
			m.kickLocked()
			m.mu.Unlock()
			return
		}
		m.commitLocked(r, p)
		m.mu.Unlock()
	}
}

// ReplicaCredsFile is the name of a replica's own credentials in its temp
// dir (Options.ReplicaCreds). The replica must leave it there: nats.go
// reads it again at each reconnect.
const ReplicaCredsFile = ".muster-nats.creds"

// StandbyArmFile is the file in a standby's temp dir that says whether it
// is armed (MUSTER_STANDBY_ARM; standby.go).
const StandbyArmFile = ".muster-standby-arm"

// spawn starts the process of reserved replica r. It runs without the lock.
func (m *Manager) spawn(r *replicaRun) (*proc.Proc, error) {
	if m.opts.beforeSpawn != nil {
		m.opts.beforeSpawn()
	}
	m.mu.Lock()
	stopping := m.stopping
	m.mu.Unlock()
	if stopping {
		return nil, errStopping
	}
	sc := r.svc.cfg
	tempDir := filepath.Join(m.cfg.Host.TempDir, r.id)
	// Record the temp dir before it exists: a manager removes only the temp
	// dirs its records name, so a crash mid-start must leave a record.
	if err := m.state.Reserve(r.id, sc.Service, tempDir); err != nil {
		return nil, fmt.Errorf("cannot record the replica: %w", err)
	}
	logf, err := logrot.Open(m.logPath(sc.Service, r.id), m.cfg.Host.LogMaxBytes, m.cfg.Host.LogKeep)
	if err != nil {
		_ = m.state.Remove(r.id)
		return nil, fmt.Errorf("cannot open log: %w", err)
	}
	conn := m.opts.Conn
	var files map[string][]byte
	if m.opts.ReplicaCreds != nil {
		creds, err := m.opts.ReplicaCreds(r.id, sc.Service)
		if err != nil {
			_ = logf.Close()
			_ = m.state.Remove(r.id)
			return nil, fmt.Errorf("cannot make its credentials: %w", err)
		}
		files = map[string][]byte{ReplicaCredsFile: creds}
		conn.CredsFile = filepath.Join(tempDir, ReplicaCredsFile)
	}
	m.mu.Lock()
	standby := r.standby
	m.mu.Unlock()
	env := m.env(sc, conn, r.id, tempDir)
	if standby {
		env = append(env, proto.EnvStandby+"=1", proto.EnvStandbyArm+"="+filepath.Join(tempDir, StandbyArmFile))
	}
	p, err := proc.Start(proc.Spec{
		ID: r.id, Path: sc.Program, Args: sc.Args, Env: env,
		Dir: sc.Dir, TempDir: tempDir, Files: files, Log: logf,
	})
	if err != nil {
		_ = m.state.Remove(r.id)
		return nil, fmt.Errorf("cannot start %s: %w", sc.Program, err)
	}
	// Taken now, not at the commit: a replica may register before its
	// state record is saved, and its start phases run from here.
	exec := time.Now()
	m.mu.Lock()
	r.spawned = exec
	m.mu.Unlock()
	id := p.Ident()
	if err := m.state.Save(statedir.Record{
		ID: r.id, Service: sc.Service, PID: id.PID, StartTicks: id.StartTicks, BootID: id.BootID,
		TempDir: tempDir, StartedMS: time.Now().UnixMilli(),
	}); err != nil {
		m.log.Warn("state record not saved", "replica", r.id, "err", err)
	}
	return p, nil
}

// commitLocked records that reserved replica r runs as p and hands it to
// its supervisor. During a shutdown the supervisor stops it at once.
func (m *Manager) commitLocked(r *replicaRun, p *proc.Proc) {
	r.proc = p
	s := r.svc
	s.stats.Started++
	starting, running := m.countLocked(s)
	s.stats.HighWater = max(s.stats.HighWater, starting+running)
	m.log.Info("replica started", "service", s.cfg.Service, "replica", r.id, "pid", p.PID())
	m.replicas.Add(1)
	go m.supervise(r)
	if m.isolated { // isolated while it was being spawned: it quiesces at once
		r.stopReason, r.quiesce = "host isolated", true
		close(r.stopReq)
	}
	m.kickLocked()
}

// logPath is where replica id of service svc logs.
func (m *Manager) logPath(svc, id string) string {
	return filepath.Join(m.cfg.Host.LogDir, safeName(svc), id+".log")
}

// safeName turns a service name into a directory name.
func safeName(svc string) string {
	b := []byte(svc)
	for i, c := range b {
		if c == '/' {
			b[i] = '_'
		}
	}
	return string(b)
}

// env builds a replica's environment: a few basics from the manager's own
// environment, the service's env from the config, then the MUSTER_*
// settings. Nothing in it comes from a message.
func (m *Manager) env(sc *ServiceConfig, conn natsconn.Config, id, tempDir string) []string {
	var env []string
	// GORACE only matters to race-detector builds (tests set its exit delay).
	for _, k := range []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "GORACE"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range sc.Env {
		env = append(env, k+"="+v)
	}
	if _, set := sc.Env["GOMAXPROCS"]; !set {
		// A Go replica runs as many handlers at once as its capacity: more
		// Ps than that only add threads that spin for work each time it
		// wakes. With 200 replicas on 2 cores that spinning cost more than
		// the calls (`muster bench host`: 822 calls/s and p50 259 ms with
		// the default, 1,000 calls/s and p50 4 ms with 1 P each). The
		// service's env wins; non-Go programs ignore it.
		env = append(env, "GOMAXPROCS="+strconv.Itoa(max(1, min(sc.Capacity, runtime.NumCPU()))))
	}
	env = append(env, conn.Env()...)
	return append(env,
		proto.EnvService+"="+sc.Service,
		proto.EnvReplicaID+"="+id,
		proto.EnvAttachID+"="+m.id,
		proto.EnvCapacity+"="+strconv.Itoa(sc.Capacity),
		proto.EnvIdleTimeout+"="+sc.IdleTimeout.String(),
		proto.EnvMinReplicas+"="+strconv.Itoa(sc.Min),
		proto.EnvExitAfterEOC+"="+strconv.FormatBool(sc.ExitAfterConversation),
		proto.EnvConvTimeout+"="+sc.ConvTimeout.String(),
		proto.EnvHeartbeat+"="+m.cfg.Host.Heartbeat.String(),
		proto.EnvGrace+"="+m.cfg.Host.Grace.String(),
		proto.EnvTempDir+"="+tempDir,
		"TMPDIR="+tempDir,
	)
}
