package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/attach/internal/statedir"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/kvwatch"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/streams"
)

// stopMargin is how much longer than a replica's own grace (MUSTER_GRACE)
// the manager waits after SIGTERM before SIGKILL: the replica's IMMED
// (0003/0010 to its partners) and deregistration happen in that margin.
const stopMargin = 2 * time.Second

// StopWait is how long a stopping manager waits at most for its replicas
// to finish before it kills them: their grace plus the margin for their
// IMMED and deregistration.
func (h HostConfig) StopWait() time.Duration { return h.Grace + stopMargin }

// Options are the manager's settings that do not come from its config file.
type Options struct {
	// Conn is how replicas reach NATS: passed to them as MUSTER_*
	// environment variables (credentials as file paths or env, never argv).
	Conn natsconn.Config
	// ReplicaCreds, when set, makes each replica its own NATS credentials
	// (a .creds file) for its id and service; the manager writes them into
	// the replica's temp dir (ReplicaCredsFile, mode 0600) and passes that
	// path as MUSTER_CREDS instead of Conn's. A replica then serves only
	// its own service (auth.ReplicaSigner). An error fails the start.
	ReplicaCreds func(id, service string) ([]byte, error)
	// Version is reported in the registration.
	Version string
	// Logger receives the manager's logs (default slog.Default()).
	Logger *slog.Logger
	// FailAfter is how many replicas of a service in a row may fail to
	// start before the service is marked failing (default 3).
	FailAfter int

	beforeSpawn func() // test hook: runs (without the lock) before each spawn
}

// Manager is a running attach manager.
//
// Lock order: Manager.mu before a proc.Proc's own lock (Proc never calls
// back into the manager). Nothing slow runs under Manager.mu: no spawning,
// no file I/O, no NATS round trip.
//
// Goroutines, each with its owner's stop path: loop and the replica-record follower end
// with the run context (cancelled by Shutdown once the replicas are gone);
// one spawner per batch of reservations (spawn.go) ends when its batch is
// spawned; cleanOrphans, if a previous run left replicas, ends when they
// are stopped (within their grace, at once when killCtx ends); a PING to a
// replica with stale heartbeats (liveness.go) ends within pingTimeout; one supervisor per replica (supervise.go) ends when its replica
// is done, stopping it when Shutdown or checkReplicas asks; finishShutdown
// waits for all of them and closes done.
type Manager struct {
	cfg    *Config
	opts   Options
	id     string
	nc     *nats.Conn
	attKV  jetstream.KeyValue
	repKV  jetstream.KeyValue
	state  statedir.Dir
	unlock func() // releases the state dir's lock (nil until taken)
	log    *slog.Logger
	start  time.Time
	starts *startMetrics // the start histograms (phases.go)

	mu         sync.Mutex
	svcs       map[string]*svcRun
	reps       map[string]*replicaRun // reserved (spawning), starting and running replicas
	isolated   bool
	isolatedBy string // why and when (the persisted isolation record), for the logs
	stopping   bool
	pool       proto.HostSetting      // this host's pool record (pool.go)
	maxLease   uint64                 // highest broker lease epoch seen in a notification (notify.go)
	retired    map[string]proto.Stats // final counters of exited replicas, per service (stats.go)
	sample0    sampled                // the last heartbeat's sample (stats.go)
	registered bool                   // the registration was written, so Shutdown deletes it
	serving    map[string]servingRec  // serving replicas of services with standbys, any host's, by record key (standby.go)
	viewFrom   time.Time              // when the replica-record follower started
	seeded     bool                   // serving was filled from the bucket (seedServing)
	touched    map[string]bool        // records the follower delivered while seedServing runs

	sub    *nats.Subscription
	reset  *nats.Subscription // muster.attach.reset.> (heal.go)
	ctl    *nats.Subscription // muster.attach.ctl.<id> (control.go)
	logs   *nats.Subscription // muster.attach.logs.<id> (logs.go)
	ownLog io.Closer          // the manager's own log file (logs.go); nil when not open
	kick   chan struct{}      // rewrite the registration now
	cancel context.CancelFunc // ends loop and the replica-record follower
	wg     sync.WaitGroup     // loop and the replica-record follower

	replicas sync.WaitGroup     // spawners, supervisors, pings and cleanOrphans
	stopCh   chan struct{}      // closed by Shutdown: supervisors stop their replicas
	killCtx  context.Context    // cancelled when a Shutdown's ctx ends: stops skip the rest of the grace
	kill     context.CancelFunc // cancels killCtx
	stopOnce sync.Once
	done     chan struct{} // closed when every goroutine has ended and the registration is gone
}

// svcRun is the manager's state for one configured service.
type svcRun struct {
	cfg       *ServiceConfig
	failures  int       // starts in a row that failed
	crashes   int       // crashes in a row (reset by a clean exit)
	restarts  int       // restarts owed, started once the backoff allows
	failing   string    // why the service is failing ("" if not)
	nextStart time.Time // no start before this (restart backoff); starts the broker asks for wait at most demandBackoffCap after lastFail
	lastFail  time.Time // the last failed start or crash
	lastProbe time.Time // the last start while failing (probe schedule, heal.go)
	stats     ServiceCounters
	reps      map[string]*replicaRun // its replicas in Manager.reps (addRepLocked), so counting them costs what it has, not what the host has
}

// ServiceCounters are what a manager counts per service.
type ServiceCounters struct {
	Started     int64  `json:"started"`
	StartFailed int64  `json:"start_failed"`
	Crashed     int64  `json:"crashed"`
	Hung        int64  `json:"hung"`
	Pinged      int64  `json:"pinged"`    // PINGs sent to replicas whose heartbeats looked stale
	Fenced      int64  `json:"fenced"`    // notifications ignored: from a broker with an older lease epoch (a deposed leader)
	Activated   int64  `json:"activated"` // standbys this manager activated for a notification (SIGUSR1)
	Exited      int64  `json:"exited"`
	HighWater   int    `json:"high_water"` // most replicas alive (starting or running) at once
	LastExit    string `json:"last_exit"`  // how the last replica ended: "exit 3", "signal killed" …
}

// replicaRun is one replica the manager reserved, started or runs.
type replicaRun struct {
	id           string
	svc          *svcRun
	proc         *proc.Proc  // nil while it is being spawned
	started      time.Time   // when it was reserved: the start timeout runs from here
	spawned      time.Time   // when its process was exec'd (zero until then)
	placement    string      // why it was started (ProcInfo.Placement)
	standby      bool        // started as a standby and not activated yet (standby.go)
	recPID       int         // the pid its record gives (standby.go: signals go to it only if it is the process's own)
	armable      bool        // a standby whose record says it takes SIGUSR2 (standby.go)
	armReported  string      // what its record says of its arming
	armed        bool        // a standby asked to take the warm subject too
	armTries     int         // SIGUSR2s sent for the current arming
	armSent      time.Time   // when the last one was sent
	last         proto.Stats // the counters of its latest registration record
	active       int         // its open calls and conversations, per that record
	registered   bool
	untouched    time.Time // while its record says it took nothing yet: when it registered
	lastBeat     time.Time
	pinging      bool          // a PING to it is in flight (liveness.go)
	lastPing     time.Time     // when the last PING was sent
	pingFails    int           // PINGs in a row it did not answer (reset by an answer or a heartbeat)
	pingAnswered bool          // it answered a PING since its last heartbeat
	stopReason   string        // set when the manager stops it on purpose
	quiesce      bool          // with stopReason: stop it with its full grace (host isolated), not as hung
	stopReq      chan struct{} // closed (with stopReason set) to have its supervisor stop it
}

// Start starts an attach manager for cfg on nc: it registers its services
// with the ATTACH role, starts each service's min replicas and acts on
// attach notifications until Shutdown. Replicas a previous run left behind
// (even one killed by SIGKILL) are stopped in the background, all at once:
// Start does not wait for them.
// If it fails, nothing it started is left running. On operating systems
// other than Linux it returns ErrUnsupported.
func Start(ctx context.Context, nc *nats.Conn, cfg *Config, opts Options) (_ *Manager, retErr error) {
	var err error
	if !proc.Supported {
		return nil, ErrUnsupported
	}
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
	killCtx, kill := context.WithCancel(context.Background())
	m := &Manager{
		cfg: cfg, opts: opts, id: id, nc: nc, state: statedir.Dir(cfg.Host.StateDir),
		log: opts.Logger.With("attach", id), start: time.Now(), starts: newStartMetrics(id),
		svcs: map[string]*svcRun{}, reps: map[string]*replicaRun{}, retired: map[string]proto.Stats{}, kick: make(chan struct{}, 1), cancel: cancel,
		stopCh: make(chan struct{}), killCtx: killCtx, kill: kill, done: make(chan struct{}),
	}
	defer func() {
		if retErr != nil {
			// Nothing slow has started yet (replicas come last), but bound it.
			sctx, cancel := context.WithTimeout(context.Background(), cfg.Host.Grace+stopMargin)
			defer cancel()
			_ = m.Shutdown(sctx)
		}
	}()
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		m.svcs[sc.Service] = &svcRun{cfg: sc}
		if sc.Standby > 0 && m.serving == nil {
			m.serving = map[string]servingRec{} // followed only when standbys are kept (standby.go)
		}
	}
	if err := os.MkdirAll(cfg.Host.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	// One instance, one state: the state dir (and the temp dirs its records
	// name) belong to the one manager that holds its lock.
	if m.unlock, err = m.state.Lock(); err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.Host.LogDir, cfg.Host.TempDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
	}
	if err := m.openOwnLog(); err != nil {
		return nil, err
	}
	if err := m.loadIsolation(); err != nil {
		return nil, err
	}
	// What the previous run left: read before this run starts anything, so
	// the clean-up (below, in the background) never takes a replica of
	// this run for an orphan.
	orphans, lerr := m.state.Load()
	if lerr != nil {
		m.log.Warn("state records of the previous run unreadable", "err", lerr)
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
	if len(orphans) > 0 {
		m.replicas.Add(1)
		go m.cleanOrphans(orphans)
	}
	// The replicas' records, followed by a watcher that is recreated at
	// once after a reconnect or a stall (kvwatch), ready before the first
	// replica starts.
	follow := kvwatch.New(kvwatch.Config{KV: m.repKV, Conn: nc, Apply: m.onReplicaRecord, UpdatesOnly: true, Log: m.log})
	m.mu.Lock()
	m.viewFrom = time.Now()
	m.mu.Unlock()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); follow.Run(runCtx) }()
	if err := follow.Sync(ctx); err != nil {
		return nil, fmt.Errorf("attach: watch replicas: %w", err)
	}
	m.seedServing(ctx)
	m.joinPool(ctx, runCtx, js)
	if m.sub, err = nc.Subscribe(proto.AttachSubject(id), m.onNotify); err != nil {
		return nil, fmt.Errorf("attach: subscribe: %w", err)
	}
	if m.reset, err = nc.Subscribe(proto.AttachResetPrefix+">", m.onReset); err != nil {
		return nil, fmt.Errorf("attach: subscribe: %w", err)
	}
	if m.ctl, err = nc.Subscribe(proto.AttachControlSubject(id), m.onControl); err != nil {
		return nil, fmt.Errorf("attach: subscribe: %w", err)
	}
	if m.logs, err = nc.Subscribe(proto.AttachLogsSubject(id), m.onLogs); err != nil {
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

// cleanOrphans stops the replicas a previous run left behind, all at once
// and off the start path: the manager registers and serves meanwhile. An
// idle orphan quiesces and exits at once; a busy one gets the grace (plus
// stopMargin) it was started with; a Shutdown whose context ends kills the
// rest at once (killCtx). Their registrations go with them, so no broker
// counts them any longer.
func (m *Manager) cleanOrphans(recs []statedir.Record) {
	defer m.replicas.Done()
	start := time.Now()
	report, err := m.state.CleanOrphans(m.killCtx, recs, m.cfg.Host.TempDir, m.cfg.Host.Grace+stopMargin, m.log)
	if err != nil {
		m.log.Warn("clean-up after the previous run was incomplete", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, r := range report.Stopped {
		if _, err := m.repKV.Get(ctx, r.ID); err == nil {
			_ = m.repKV.Delete(ctx, r.ID)
		}
	}
	m.log.Info("cleaned up after the previous run", "stopped", len(report.Stopped), "stale", len(report.Stale),
		"dirs", len(report.RemovedDirs), "took", time.Since(start).Round(time.Millisecond))
}

// ID returns the manager's id (its host name).
func (m *Manager) ID() string { return m.id }

// Info returns the manager's registration record as of now.
func (m *Manager) Info() proto.AttachInfo {
	m.mu.Lock()
	ai := proto.AttachInfo{
		ID: m.id, Host: hostname(), Version: m.opts.Version, Isolated: m.isolated,
		HeartbeatMS: m.cfg.Host.Heartbeat.Milliseconds(), Updated: time.Now().UnixMilli(), Started: m.start.UnixMilli(),
		Replicas: len(m.reps), MaxReplicas: m.maxReplicasLocked(),
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
	m.figuresLocked(&ai)
	m.mu.Unlock()
	hostStats(&ai) // reads /proc: not under the lock
	return ai
}

// register writes the manager's registration.
func (m *Manager) register(ctx context.Context) error {
	b, _ := json.Marshal(m.Info())
	if _, err := m.attKV.Put(ctx, m.id, b); err != nil {
		return fmt.Errorf("attach: register: %w", err)
	}
	m.mu.Lock()
	m.registered = true
	m.mu.Unlock()
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
// replica to quiesce (SIGTERM), kills what is left after the grace period
// (plus stopMargin), waits for its goroutines and removes its registration.
//
// If ctx ends first, Shutdown sends SIGKILL to every remaining replica's
// process group at once and returns ctx's error; the manager's goroutines
// then end by themselves within seconds (each of their waits is bounded),
// and a later Shutdown waits for them again. Shutdown is idempotent and safe
// to call concurrently.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.stopOnce.Do(m.beginShutdown)
	select {
	case <-m.done:
		return nil
	default:
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
	}
	m.killNow()
	return fmt.Errorf("attach: shutdown: %w", ctx.Err())
}

// beginShutdown stops taking notifications and tells every supervisor to
// stop its replica; finishShutdown does the rest.
func (m *Manager) beginShutdown() {
	if m.sub != nil {
		_ = m.sub.Unsubscribe()
	}
	for _, sub := range []*nats.Subscription{m.reset, m.ctl, m.logs} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
	m.mu.Lock()
	m.stopping = true // no more reservations
	m.mu.Unlock()
	close(m.stopCh)
	go m.finishShutdown()
}

// finishShutdown waits for the replicas (while loop goes on writing the
// registration), then for loop and the watcher, deletes the registration
// and closes done. Each wait is bounded: a replica's by its grace,
// stopMargin and reapTimeout; the deletion by 2s.
func (m *Manager) finishShutdown() {
	m.replicas.Wait()
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	registered := m.registered
	m.mu.Unlock()
	if registered {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := m.attKV.Delete(dctx, m.id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			m.log.Warn("deregister failed", "err", err)
		}
		cancel()
	}
	m.kill() // releases killCtx
	if m.unlock != nil {
		m.unlock() // last: nothing of this run touches the state dir any more
	}
	m.log.Info("attach manager stopped")
	m.closeOwnLog()
	close(m.done)
}

// killNow ends every stop's grace and sends SIGKILL to every replica's
// group at once.
func (m *Manager) killNow() {
	m.kill()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.reps {
		if r.proc != nil {
			r.proc.Kill()
		}
	}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
