package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/kvwatch"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/streams"
)

// stopMargin is how much longer than a replica's own grace (MUSTER_GRACE)
// the manager waits after SIGTERM before SIGKILL: the replica's IMMED
// (0003/0010 to its partners) and deregistration happen in that margin.
const stopMargin = 2 * time.Second

// Options are the manager's settings that do not come from its config file.
type Options struct {
	// Conn is how replicas reach NATS: passed to them as MUSTER_*
	// environment variables (credentials as file paths or env, never argv).
	Conn natsconn.Config
	// Version is reported in the registration.
	Version string
	// Logger receives the manager's logs (default slog.Default()).
	Logger *slog.Logger
	// FailAfter is how many replicas of a service in a row may fail to
	// start before the service is marked failing (default 3).
	FailAfter int
}

// Manager is a running attach manager.
type Manager struct {
	cfg   *Config
	opts  Options
	id    string
	nc    *nats.Conn
	attKV jetstream.KeyValue
	repKV jetstream.KeyValue
	state StateDir
	log   *slog.Logger
	start time.Time

	mu       sync.Mutex
	svcs     map[string]*svcRun
	reps     map[string]*replicaRun
	isolated bool
	stopping bool

	sub    *nats.Subscription
	kick   chan struct{} // rewrite the registration now
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// svcRun is the manager's state for one configured service.
type svcRun struct {
	cfg       *ServiceConfig
	failures  int       // starts in a row that failed
	crashes   int       // crashes in a row (reset by a clean exit)
	restarts  int       // restarts owed, started once the backoff allows
	failing   string    // why the service is failing ("" if not)
	nextStart time.Time // no start before this (restart backoff)
	stats     ServiceCounters
}

// ServiceCounters are what a manager counts per service.
type ServiceCounters struct {
	Started     int64  `json:"started"`
	StartFailed int64  `json:"start_failed"`
	Crashed     int64  `json:"crashed"`
	Hung        int64  `json:"hung"`
	Exited      int64  `json:"exited"`
	HighWater   int    `json:"high_water"` // most replicas alive (starting or running) at once
	LastExit    string `json:"last_exit"`  // how the last replica ended: "exit 3", "signal killed" …
}

// replicaRun is one replica process the manager started.
type replicaRun struct {
	id         string
	svc        *svcRun
	proc       *Proc
	started    time.Time
	registered bool
	lastBeat   time.Time
	stopReason string // set when the manager stops it on purpose
}

// Start starts an attach manager for cfg on nc: it cleans up after a
// previous run, registers its services with the ATTACH role, starts each
// service's min replicas and acts on attach notifications until Shutdown.
func Start(ctx context.Context, nc *nats.Conn, cfg *Config, opts Options) (m *Manager, retErr error) {
	ctx, cancelStart := context.WithTimeout(ctx, 30*time.Second) // every startup step is bounded
	defer cancelStart()
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FailAfter <= 0 {
		opts.FailAfter = 3
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	id := cfg.Host.Name
	if err := proto.ValidID(id); err != nil {
		return nil, fmt.Errorf("attach: host name %q is not a valid id: %w", id, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	m = &Manager{
		cfg: cfg, opts: opts, id: id, nc: nc, state: StateDir{Dir: cfg.Host.StateDir},
		log: opts.Logger.With("attach", id), start: time.Now(),
		svcs: map[string]*svcRun{}, reps: map[string]*replicaRun{}, kick: make(chan struct{}, 1), cancel: cancel,
	}
	defer func() {
		if retErr != nil {
			m.Shutdown(context.Background())
		}
	}()
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		m.svcs[sc.Service] = &svcRun{cfg: sc}
	}
	for _, dir := range []string{cfg.Host.StateDir, cfg.Host.LogDir, cfg.Host.TempDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
	}
	report, err := m.state.CleanOrphans(ctx, cfg.Host.TempDir, nil, cfg.Host.Grace, m.log)
	if err != nil {
		m.log.Warn("clean-up after the previous run was incomplete", "err", err)
	}
	if len(report.Stopped)+len(report.Stale)+len(report.RemovedDirs) > 0 {
		m.log.Info("cleaned up after the previous run", "stopped", len(report.Stopped), "stale", len(report.Stale), "dirs", len(report.RemovedDirs))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("attach: jetstream: %w", err)
	}
	if _, err := streams.EnsureQueue(ctx, js); err != nil {
		return nil, err
	}
	if m.repKV, err = streams.EnsureBucket(ctx, js, proto.ReplicaBucket); err != nil {
		return nil, err
	}
	if m.attKV, err = streams.EnsureBucket(ctx, js, proto.AttachBucket); err != nil {
		return nil, err
	}
	w, err := m.repKV.WatchAll(runCtx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("attach: watch replicas: %w", err)
	}
	m.wg.Add(1)
	go m.watchReplicas(runCtx, w)
	if m.sub, err = nc.Subscribe(proto.AttachSubject(id), m.onNotify); err != nil {
		return nil, fmt.Errorf("attach: subscribe: %w", err)
	}
	if err := m.register(ctx); err != nil {
		return nil, err
	}
	m.wg.Add(1)
	go m.loop(runCtx)
	m.mu.Lock()
	for _, s := range m.svcs {
		m.keepMinLocked(s)
	}
	m.mu.Unlock()
	m.log.Info("attach manager started", "services", len(cfg.Services), "max_replicas", cfg.Host.MaxReplicas)
	return m, nil
}

// ID returns the manager's id (its host name).
func (m *Manager) ID() string { return m.id }

// onNotify acts on an attach notification: start replicas, clamped the
// EntireX way (missing taken within 1..100, then at most max − started),
// and never past the service's or the host's limit. Requests beyond the
// limits wait in the queue until a replica frees up or their deadline.
func (m *Manager) onNotify(msg *nats.Msg) {
	n, err := proto.DecodeNotification(msg.Data)
	if err != nil {
		m.log.Warn("bad attach notification ignored", "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.svcs[n.Service]
	if s == nil || m.isolated || m.stopping {
		return
	}
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
	want = min(want, 100) // and never more than 100 at once
	k := min(want, s.cfg.Max-starting-running, m.cfg.Host.MaxReplicas-len(m.reps))
	if s.failing != "" {
		k = min(k, 1) // one probe at a time while failing
	}
	for i := 0; i < k; i++ {
		if !m.startLocked(s) {
			break
		}
	}
}

// countLocked returns the service's replicas not yet registered and registered.
func (m *Manager) countLocked(s *svcRun) (starting, running int) {
	for _, r := range m.reps {
		if r.svc != s {
			continue
		}
		if r.registered {
			running++
		} else {
			starting++
		}
	}
	return starting, running
}

// keepMinLocked starts replicas until the service has its min.
func (m *Manager) keepMinLocked(s *svcRun) {
	starting, running := m.countLocked(s)
	for i := starting + running; i < s.cfg.Min && len(m.reps) < m.cfg.Host.MaxReplicas; i++ {
		if !m.startLocked(s) {
			return
		}
	}
}

// startLocked starts one replica of s unless its restart backoff runs.
func (m *Manager) startLocked(s *svcRun) bool {
	if m.stopping || time.Now().Before(s.nextStart) {
		return false
	}
	id := nuid.Next()
	sc := s.cfg
	tempDir := filepath.Join(m.cfg.Host.TempDir, id)
	logPath := filepath.Join(m.cfg.Host.LogDir, safeName(sc.Service), id+".log")
	logf, err := OpenRotatingFile(logPath, m.cfg.Host.LogMaxBytes, m.cfg.Host.LogKeep)
	if err != nil {
		m.startFailedLocked(s, fmt.Sprintf("cannot open log: %v", err))
		return false
	}
	p, err := StartProc(ProcSpec{
		ID: id, Path: sc.Program, Args: sc.Args, Env: m.env(sc, id, tempDir),
		Dir: sc.Dir, TempDir: tempDir, Log: logf,
	})
	if err != nil {
		m.startFailedLocked(s, fmt.Sprintf("cannot start %s: %v", sc.Program, err))
		return false
	}
	r := &replicaRun{id: id, svc: s, proc: p, started: time.Now()}
	m.reps[id] = r
	s.stats.Started++
	starting, running := m.countLocked(s)
	s.stats.HighWater = max(s.stats.HighWater, starting+running)
	if err := m.state.Save(ProcRecord{ID: id, Service: sc.Service, PID: p.PID(), CreateTimeMS: p.CreateTimeMS(), TempDir: tempDir, StartedMS: r.started.UnixMilli()}); err != nil {
		m.log.Warn("state record not saved", "replica", id, "err", err)
	}
	m.log.Info("replica started", "service", sc.Service, "replica", id, "pid", p.PID())
	m.wg.Add(1)
	go m.reap(r)
	m.kickLocked()
	return true
}

// env builds a replica's environment: a few basics from the manager's own
// environment, the service's env from the config, then the MUSTER_*
// settings. Nothing in it comes from a message.
func (m *Manager) env(sc *ServiceConfig, id, tempDir string) []string {
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
	env = append(env, m.opts.Conn.Env()...)
	return append(env,
		proto.EnvService+"="+sc.Service,
		proto.EnvReplicaID+"="+id,
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

// reap waits for a replica to exit and decides what follows.
func (m *Manager) reap(r *replicaRun) {
	defer m.wg.Done()
	<-r.proc.Done()
	st := r.proc.Exit()
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
	delete(m.reps, r.id)
	s := r.svc
	s.stats.Exited++
	s.stats.LastExit = st.String()
	log := m.log.With("service", s.cfg.Service, "replica", r.id, "status", st.String())
	switch {
	case m.stopping:
		log.Info("replica stopped")
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
		m.startFailedLocked(s, fmt.Sprintf("replica exited (%s) before it registered", st))
		log.Warn("replica failed to start")
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
		s.failing = why
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
	s.nextStart = time.Now().Add(d)
}

// watchReplicas follows the registrations of this manager's replicas:
// registered means started, and each record is a heartbeat.
func (m *Manager) watchReplicas(ctx context.Context, w jetstream.KeyWatcher) {
	defer m.wg.Done()
	kvwatch.Follow(ctx, w, m.onReplicaRecord, nil)
}

// onReplicaRecord takes one registration write: registered means started,
// and each record is a heartbeat.
func (m *Manager) onReplicaRecord(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.reps[e.Key()]
	if r == nil {
		return
	}
	if !r.registered {
		r.registered = true
		r.svc.failures, r.svc.failing, r.svc.nextStart = 0, "", time.Time{}
		m.log.Info("replica registered", "service", r.svc.cfg.Service, "replica", r.id, "after", time.Since(r.started).Round(time.Millisecond))
		m.kickLocked()
	}
	r.lastBeat = time.Now()
}

// loop enforces start timeouts and heartbeats, keeps min replicas, caps
// the logs and rewrites the registration.
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
		case <-m.kick:
		}
		rctx, cancel := context.WithTimeout(ctx, m.cfg.Host.Heartbeat)
		if err := m.register(rctx); err != nil && ctx.Err() == nil {
			m.log.Warn("registration not written", "err", err)
		}
		cancel()
	}
}

// checkReplicas kills replicas that do not register in time or whose
// heartbeats stopped while the process lives, and restarts for min.
func (m *Manager) checkReplicas() {
	now := time.Now()
	hung := 3 * m.cfg.Host.Heartbeat
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.reps {
		if r.stopReason != "" {
			continue
		}
		switch {
		case !r.registered && now.Sub(r.started) > r.svc.cfg.StartTimeout:
			r.stopReason = fmt.Sprintf("did not register within the start timeout (%v)", r.svc.cfg.StartTimeout)
		case r.registered && now.Sub(r.lastBeat) > hung:
			r.stopReason = fmt.Sprintf("heartbeats stopped for %v while the process lives", now.Sub(r.lastBeat).Round(time.Millisecond))
		default:
			continue
		}
		p := r.proc
		go p.Stop(time.Second) // reap() records the outcome
	}
	for _, s := range m.svcs {
		for ; s.restarts > 0 && !now.Before(s.nextStart) && len(m.reps) < m.cfg.Host.MaxReplicas; s.restarts-- {
			if st, run := m.countLocked(s); st+run >= s.cfg.Max || !m.startLocked(s) {
				s.restarts = 0 // at max, or it cannot start: the broker asks again if work waits
				break
			}
		}
		m.keepMinLocked(s)
	}
}

// capLogs keeps the log dir within its total size.
func (m *Manager) capLogs() {
	m.mu.Lock()
	open := map[string]bool{}
	for _, r := range m.reps {
		open[filepath.Join(m.cfg.Host.LogDir, safeName(r.svc.cfg.Service), r.id+".log")] = true
	}
	m.mu.Unlock()
	if _, err := EnforceLogCap(m.cfg.Host.LogDir, m.cfg.Host.LogTotalBytes, open); err != nil {
		m.log.Warn("log cap", "err", err)
	}
}

func (m *Manager) kickLocked() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Info returns the manager's registration record as of now.
func (m *Manager) Info() proto.AttachInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	ai := proto.AttachInfo{
		ID: m.id, Host: hostname(), Version: m.opts.Version, Isolated: m.isolated,
		HeartbeatMS: m.cfg.Host.Heartbeat.Milliseconds(), Updated: time.Now().UnixMilli(), Started: m.start.UnixMilli(),
		Replicas: len(m.reps), MaxReplicas: m.cfg.Host.MaxReplicas,
	}
	for _, sc := range m.cfg.Services {
		ai.Services = append(ai.Services, sc.Service)
		if f := m.svcs[sc.Service].failing; f != "" {
			if ai.Failing == nil {
				ai.Failing = map[string]string{}
			}
			ai.Failing[sc.Service] = f
		}
	}
	for _, r := range m.reps {
		if !r.registered {
			ai.Starting++
		}
	}
	hostStats(&ai)
	return ai
}

func (m *Manager) register(ctx context.Context) error {
	b, _ := json.Marshal(m.Info())
	if _, err := m.attKV.Put(ctx, m.id, b); err != nil {
		return fmt.Errorf("attach: register: %w", err)
	}
	return nil
}

// Counters returns the manager's counters per service.
func (m *Manager) Counters() map[string]ServiceCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]ServiceCounters{}
	for name, s := range m.svcs {
		out[name] = s.stats
	}
	return out
}

// Shutdown stops the manager: it takes no more notifications, asks every
// replica to quiesce (SIGTERM), kills what is left after the grace period,
// and removes its registration. It is idempotent.
func (m *Manager) Shutdown(ctx context.Context) {
	m.once.Do(func() {
		if m.sub != nil {
			_ = m.sub.Unsubscribe()
		}
		m.mu.Lock()
		m.stopping = true
		procs := make([]*Proc, 0, len(m.reps))
		for _, r := range m.reps {
			procs = append(procs, r.proc)
		}
		m.mu.Unlock()
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Add(1)
			go func() { defer wg.Done(); p.Stop(m.cfg.Host.Grace + stopMargin) }()
		}
		wg.Wait()
		m.cancel()
		m.wg.Wait()
		if m.attKV != nil {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := m.attKV.Delete(dctx, m.id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				m.log.Warn("deregister failed", "err", err)
			}
		}
		m.log.Info("attach manager stopped")
	})
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

func hostname() string {
	h, _ := os.Hostname()
	return h
}
