package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
)

// The host scenario: one host with many configured services, few of them
// live. A `muster broker` and a `muster attach` run as processes of their
// own against the bench's NATS (embedded, as in `muster up`), so the
// CPU and memory measured are theirs; the attach manager starts the live
// replicas (examples/echo-worker) through min. Two rounds, each on a
// fresh system: the small one configures a tenth of the services with the
// same live replicas (only at rest); the full one is measured at rest and
// under a paced load. What the full round costs beyond the small one,
// divided by the idle services it adds, is what an idle service costs.

// hostHeartbeat is the attach manager's heartbeat in the host scenario
// (the default of an attach config). The rest window is a whole number
// of them, so each round sees as many registration writes.
const hostHeartbeat = 2 * time.Second

// Judged limits of the host scenario (docs/PERFORMANCE.md).
const (
	// idleCPULimit is the most CPU, in µs per second, that one idle
	// configured service may cost the broker or the attach manager at
	// rest. What an idle service really costs them is below 1 µs/s
	// (BenchmarkCheckReplicas: the attach manager's 100 ms check; one
	// service name more in each 2 s registration); a 100 ms check that
	// walked every replica for every service cost 18–21 µs/s at 200
	// replicas. The limit sits above the noise of a 2-core machine
	// shared with others, where a round's rest CPU moves by up to ±1% of
	// a core, ±10 µs/s per service over 900 idle services.
	idleCPULimit = 15.0
	// idleHeapLimit is the most live Go heap, in KiB, that one idle
	// configured service may cost the broker or the attach manager
	// (measured: about 0.4 and 0.6 KiB).
	idleHeapLimit = 2.0
	// achievedShare is the share of the offered rate the load must reach.
	achievedShare = 0.95
)

// hostRound is what one round measured.
type hostRound struct {
	services, live int
	rest           hostCPU
	load           *hostCPU // nil: no load in this round
	brokerRSS      uint64
	attachRSS      uint64
	replicaRSS     uint64 // mean per replica
	brokerHeap     uint64
	attachHeap     uint64
	calls          loadResult
	startTook      time.Duration // until every live replica registered
	stopTook       time.Duration // attach manager (and replicas), broker, NATS
}

// hostCPU is the CPU of each part over one window, in % of one core.
type hostCPU struct {
	broker, attach, replicas, bench float64
}

func runHost(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Live > cfg.HostServices*maxPerService {
		return nil, fmt.Errorf("%d live replicas on %d services: at most %d per service", cfg.Live, cfg.HostServices, maxPerService)
	}
	bin, err := os.MkdirTemp("", "muster-bench-bin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bin)
	worker, err := buildProgram(ctx, cfg.Worker, "github.com/musterhq/muster/examples/echo-worker", bin)
	if err != nil {
		return nil, err
	}
	small := max(cfg.HostServices/10, 1, (cfg.Live+maxPerService-1)/maxPerService)
	base, stopBase, err := runHostRound(ctx, cfg, worker, small, false, nil)
	if err != nil {
		return nil, fmt.Errorf("%d services: %w", small, err)
	}
	// The baseline's system stops while the full one starts (which is not
	// measured); the full one measures nothing before it has stopped.
	stopped := make(chan error, 1)
	go func() { stopped <- stopBase() }()
	var once sync.Once
	var stopErr error
	waitBase := func() error {
		once.Do(func() { stopErr = <-stopped })
		return stopErr
	}
	defer waitBase()
	full, stopFull, err := runHostRound(ctx, cfg, worker, cfg.HostServices, true, waitBase)
	if err != nil {
		return nil, fmt.Errorf("%d services: %w", cfg.HostServices, err)
	}
	if err := errors.Join(stopFull(), waitBase()); err != nil {
		return nil, err
	}
	return hostResult(cfg, base, full), nil
}

// maxPerService is the most live replicas the scenario puts on one
// service (when there are fewer services than live replicas).
const maxPerService = 64

func hostResult(cfg Config, base, full *hostRound) *Result {
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	rest := func(name string, f, b float64) Figure {
		fig := Figure{Name: name, Unit: "% core", Muster: f, Baseline: b}
		if b > 0 {
			fig.Ratio = f / b
		}
		return fig
	}
	mem := func(name string, f, b uint64) Figure {
		fig := Figure{Name: name, Unit: "MiB", Muster: mib(f), Baseline: mib(b)}
		if b > 0 {
			fig.Ratio = float64(f) / float64(b)
		}
		return fig
	}
	idle := float64(full.services - base.services)
	// What one idle service costs a component: the full round's figure
	// less the baseline's, over the idle services it adds (% of one core
	// → µs of CPU per second: × 10⁴).
	perIdle := func(name, unit string, full, base, limit float64) Figure {
		f := Figure{Name: "idle service: " + name, Unit: unit, Target: fmt.Sprintf("≤ %g %s", limit, unit)}
		if idle > 0 {
			f.Muster = (full - base) / idle
		}
		return judge(f, idle > 0 && f.Muster <= limit)
	}
	kib := func(b uint64) float64 { return float64(b) / 1024 }
	figs := []Figure{
		rest("rest CPU: attach manager", full.rest.attach, base.rest.attach),
		rest("rest CPU: broker", full.rest.broker, base.rest.broker),
		rest("rest CPU: NATS server (bench process)", full.rest.bench, base.rest.bench),
		rest(fmt.Sprintf("rest CPU: %d replicas together", full.live), full.rest.replicas, base.rest.replicas),
		mem("RSS: attach manager", full.attachRSS, base.attachRSS),
		mem("RSS: broker", full.brokerRSS, base.brokerRSS),
		mem("RSS: one replica (mean)", full.replicaRSS, base.replicaRSS),
		mem("Go heap after GC: attach manager", full.attachHeap, base.attachHeap),
		mem("Go heap after GC: broker", full.brokerHeap, base.brokerHeap),
		perIdle("attach manager rest CPU", "µs/s", full.rest.attach*1e4, base.rest.attach*1e4, idleCPULimit),
		perIdle("broker rest CPU", "µs/s", full.rest.broker*1e4, base.rest.broker*1e4, idleCPULimit),
		perIdle("attach manager Go heap", "KiB", kib(full.attachHeap), kib(base.attachHeap), idleHeapLimit),
		perIdle("broker Go heap", "KiB", kib(full.brokerHeap), kib(base.brokerHeap), idleHeapLimit),
	}
	c := full.calls
	want := achievedShare * float64(cfg.Rate)
	figs = append(figs,
		judge(Figure{Name: "load: achieved rate", Unit: "calls/s", Muster: c.achieved, Target: fmt.Sprintf("≥ %.0f calls/s", want)}, c.achieved >= want),
		judge(Figure{Name: "load: errors", Unit: "calls", Muster: float64(c.errors), Target: "0"}, c.errors == 0),
		Figure{Name: "load: p50 latency", Unit: "ms", Muster: ms(c.p50)},
		Figure{Name: "load: p99 latency", Unit: "ms", Muster: ms(c.p99)},
	)
	if l := full.load; l != nil {
		figs = append(figs,
			Figure{Name: "load CPU: attach manager", Unit: "% core", Muster: l.attach},
			Figure{Name: "load CPU: broker", Unit: "% core", Muster: l.broker},
			Figure{Name: "load CPU: bench process (NATS server + callers)", Unit: "% core", Muster: l.bench},
			Figure{Name: fmt.Sprintf("load CPU: %d replicas together", full.live), Unit: "% core", Muster: l.replicas},
		)
	}
	res := &Result{
		Figures: figs,
		Notes: []string{
			fmt.Sprintf("one host: %d configured services (examples/echo-worker), %d live replicas (min) spread over %d of them; baseline: %d configured services, the same %d replicas; `muster broker` and `muster attach` are processes of their own, NATS runs in the bench process",
				full.services, full.live, min(full.live, full.services), base.services, base.live),
			fmt.Sprintf("rest: %v with every replica idle, the median of %d windows of one heartbeat; load: %d calls/s for %v, paced (open loop, latency from each call's due time), round robin over the live services",
				restWindow(cfg), restWindow(cfg)/hostHeartbeat, cfg.Rate, cfg.Duration),
			"CPU: % of one core (threads' run time from /proc/<pid>/task/*/schedstat); RSS: VmRSS; Go heap: HeapAlloc right after a forced GC (/debug/pprof/heap?gc=1); idle service = (full − baseline) / the idle services it adds",
			"warm calls go from caller to replica directly (one NATS request/reply); the broker only sees a call that finds its replica busy",
		},
	}
	res.Notes = append(res.Notes, fmt.Sprintf("start (NATS, broker, attach manager, until every live replica registered) took %.1fs and %.1fs, stop %.1fs and %.1fs (baseline, full)",
		base.startTook.Seconds(), full.startTook.Seconds(), base.stopTook.Seconds(), full.stopTook.Seconds()))
	if c.firstErr != nil {
		res.Notes = append(res.Notes, "first error: "+c.firstErr.Error())
	}
	return res
}

// restWindow is how long the rest is measured: --duration, rounded up to
// whole attach heartbeats.
func restWindow(cfg Config) time.Duration {
	n := max(1, (cfg.Duration+hostHeartbeat-1)/hostHeartbeat)
	return n * hostHeartbeat
}

// hostSystem is one round's system: NATS (in the bench process), a
// broker and an attach manager as child processes.
type hostSystem struct {
	*system
	tmp            string
	broker, attach *daemon
	services       []string // every configured service; the live ones first
	live           []string // the services with a live replica
	hostName       string
}

// runHostRound starts a system with services configured, measures it
// (once prevStopped, if set, says the previous round's system is gone)
// and returns what it measured and how to stop it.
func runHostRound(ctx context.Context, cfg Config, worker string, services int, load bool, prevStopped func() error) (_ *hostRound, _ func() error, retErr error) {
	round := &hostRound{services: services, live: cfg.Live}
	start := time.Now()
	hs, err := startHostSystem(ctx, cfg, worker, services)
	if err != nil {
		return nil, nil, err
	}
	stop := func() error {
		t := time.Now()
		err := hs.close()
		round.stopTook = time.Since(t)
		return err
	}
	defer func() {
		if retErr != nil {
			_ = stop()
		}
	}()
	r, err := hs.measureRound(ctx, cfg, round, start, load, prevStopped)
	if err != nil {
		return nil, nil, err
	}
	return r, stop, nil
}

// measureRound measures a started system.
func (hs *hostSystem) measureRound(ctx context.Context, cfg Config, round *hostRound, start time.Time, load bool, prevStopped func() error) (_ *hostRound, err error) {
	nc, err := hs.connect("bench host", auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if err := hs.waitLive(ctx, nc, cfg.Live); err != nil {
		return nil, err
	}
	round.startTook = time.Since(start)
	cnc, err := hs.connect("bench host client", auth.RoleClient)
	if err != nil {
		return nil, err
	}
	cli, err := client.New(cnc)
	if err != nil {
		return nil, err
	}
	// Every live service answers once before anything is measured.
	for _, svc := range hs.live {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := cli.Call(c, svc, []byte(svc))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("warm-up call to %s: %w", svc, err)
		}
		if string(got) != svc {
			return nil, fmt.Errorf("warm-up call to %s: got %q", svc, got)
		}
	}
	if prevStopped != nil {
		if err := prevStopped(); err != nil {
			return nil, fmt.Errorf("the previous round did not stop cleanly: %w", err)
		}
	}
	// Let the start's aftermath (the replicas' first heartbeats, the
	// garbage of 200 starts) pass before the rest is measured.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	replicas := children(hs.attach.pid())
	if len(replicas) < cfg.Live {
		return nil, fmt.Errorf("the attach manager has %d child processes, want %d replicas", len(replicas), cfg.Live)
	}
	// The rest: the median of windows of one heartbeat each (each sees
	// one registration write of every participant), so that one window
	// with a garbage collection or a neighbour's burst does not decide.
	var windows []hostCPU
	for range restWindow(cfg) / hostHeartbeat {
		w, err := hs.measure(ctx, replicas, hostHeartbeat, nil)
		if err != nil {
			return nil, err
		}
		windows = append(windows, w)
	}
	round.rest = medianCPU(windows)
	if round.brokerRSS, err = rss(hs.broker.pid()); err != nil {
		return nil, err
	}
	if round.attachRSS, err = rss(hs.attach.pid()); err != nil {
		return nil, err
	}
	var sum uint64
	for _, pid := range replicas {
		r, _ := rss(pid)
		sum += r
	}
	round.replicaRSS = sum / uint64(len(replicas))
	if round.brokerHeap, err = hs.broker.heap(ctx); err != nil {
		return nil, err
	}
	if round.attachHeap, err = hs.attach.heap(ctx); err != nil {
		return nil, err
	}
	if load {
		var l hostCPU
		l, err = hs.measure(ctx, replicas, 0, func() { round.calls = paced(ctx, cli, hs.live, cfg.Rate, cfg.Duration) })
		if err != nil {
			return nil, err
		}
		round.load = &l
	}
	return round, nil
}

// measure samples the CPU of every part, then waits d or runs work, and
// samples again.
func (hs *hostSystem) measure(ctx context.Context, replicas []int, d time.Duration, work func()) (hostCPU, error) {
	self := os.Getpid()
	bp, ap := hs.broker.pid(), hs.attach.pid()
	all := append([]int{self, bp, ap}, replicas...)
	before := sampleCPU(all)
	if work != nil {
		work()
	} else if err := sleepCtx(ctx, d); err != nil {
		return hostCPU{}, err
	}
	after := sampleCPU(all)
	for _, d := range []*daemon{hs.broker, hs.attach} {
		if err := d.alive(); err != nil {
			return hostCPU{}, err
		}
	}
	part := func(pids ...int) float64 {
		b, a := cpuSample{at: before.at, used: map[int]time.Duration{}}, cpuSample{at: after.at, used: map[int]time.Duration{}}
		for _, p := range pids {
			if v, ok := before.used[p]; ok {
				b.used[p] = v
			}
			if v, ok := after.used[p]; ok {
				a.used[p] = v
			}
		}
		return a.percentSince(b)
	}
	return hostCPU{broker: part(bp), attach: part(ap), bench: part(self), replicas: part(replicas...)}, nil
}

// medianCPU is the median of each part over the windows.
func medianCPU(ws []hostCPU) hostCPU {
	med := func(get func(hostCPU) float64) float64 {
		v := make([]float64, len(ws))
		for i, w := range ws {
			v[i] = get(w)
		}
		slices.Sort(v)
		if n := len(v); n%2 == 0 {
			return (v[n/2-1] + v[n/2]) / 2
		}
		return v[len(v)/2]
	}
	return hostCPU{
		broker:   med(func(c hostCPU) float64 { return c.broker }),
		attach:   med(func(c hostCPU) float64 { return c.attach }),
		replicas: med(func(c hostCPU) float64 { return c.replicas }),
		bench:    med(func(c hostCPU) float64 { return c.bench }),
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startHostSystem starts NATS, then `muster broker` and `muster attach`
// with a config of n services whose program is worker, cfg.Live replicas
// of them kept running by min.
func startHostSystem(ctx context.Context, cfg Config, worker string, n int) (_ *hostSystem, retErr error) {
	if cfg.Executable == "" {
		return nil, errors.New("no muster binary to run the broker and attach manager with")
	}
	sys, err := startNATS(cfg)
	if err != nil {
		return nil, err
	}
	hs := &hostSystem{system: sys, hostName: "bench-host-" + nuid.Next()[:10]}
	defer func() {
		if retErr != nil {
			_ = hs.close()
		}
	}()
	if hs.tmp, err = os.MkdirTemp("", "muster-bench-host-"); err != nil {
		return nil, err
	}
	class := "H" + nuid.Next()[:8]
	for i := range n {
		hs.services = append(hs.services, fmt.Sprintf("%s/S%05d/ECHO", class, i))
	}
	mins := spread(cfg.Live, n)
	for i, m := range mins {
		if m > 0 {
			hs.live = append(hs.live, hs.services[i])
		}
	}
	file := filepath.Join(hs.tmp, "attach.yaml")
	if err := os.WriteFile(file, hostConfig(hs.hostName, hs.tmp, worker, hs.services, mins, cfg.Live), 0o600); err != nil {
		return nil, err
	}

	bargs := []string{"broker", "--http", "127.0.0.1:0", "--pprof"}
	if hs.broker, err = startDaemon(ctx, "broker", cfg.Executable, bargs, hs.connCfg(auth.RoleBroker).Env(), "muster broker "); err != nil {
		return nil, err
	}
	aargs := []string{"attach", "--config", file, "--http", "127.0.0.1:0", "--pprof"}
	acfg := hs.connCfg(auth.RoleAttach)
	if hs.keys != nil {
		// As muster up: the manager's user is named after its id, and
		// each replica gets credentials of its own service.
		creds, err := auth.UserCreds(hs.keys, auth.RoleAttach, hs.hostName)
		if err != nil {
			return nil, err
		}
		if acfg.CredsFile, err = auth.WriteCredsFile(filepath.Join(hs.dir, "creds", hs.hostName+".creds"), creds); err != nil {
			return nil, err
		}
		aargs = append(aargs, "--replica-signer", filepath.Join(hs.dir, "keys", auth.ReplicaSignerFile))
	}
	if hs.attach, err = startDaemon(ctx, "attach", cfg.Executable, aargs, acfg.Env(), " serving "); err != nil {
		return nil, err
	}
	return hs, nil
}

// spread divides live replicas over n services: one each on the first
// live services, or as evenly as it goes when there are fewer services.
func spread(live, n int) []int {
	mins := make([]int, n)
	for i := range live {
		mins[i%n]++
	}
	return mins
}

// hostConfig is the attach config of the host scenario: services of
// program worker, mins[i] replicas of service i kept running (max the
// same, at least 1), none ever idling out.
func hostConfig(name, dir, worker string, services []string, mins []int, live int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "host:\n  name: %s\n  max_replicas: %d\n  state_dir: %s\n  log_dir: %s\n  temp_dir: %s\n  heartbeat: %v\n  grace: 2s\nservices:\n",
		name, max(live, 1), quote(filepath.Join(dir, "state")), quote(filepath.Join(dir, "logs")), quote(filepath.Join(dir, "tmp")), hostHeartbeat)
	for i, s := range services {
		fmt.Fprintf(&b, "  - service: %s\n    program: %s\n    min: %d\n    max: %d\n    idle_timeout: 0s\n", s, quote(worker), mins[i], max(mins[i], 1))
	}
	return []byte(b.String())
}

// quote makes s a YAML string (JSON strings are YAML's double-quoted ones).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitLive waits until the attach manager's registration counts live
// replicas, all of them registered.
func (hs *hostSystem) waitLive(ctx context.Context, nc *nats.Conn, live int) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, proto.AttachBucket)
	if err != nil {
		return err
	}
	var ai proto.AttachInfo
	err = pollEvery(ctx, 60*time.Second, 50*time.Millisecond, func() bool {
		if hs.attach.alive() != nil {
			return true
		}
		e, err := kv.Get(ctx, hs.hostName)
		if err != nil {
			return false
		}
		ai, err = proto.DecodeAttachInfo(e.Value())
		return err == nil && ai.Replicas >= live && ai.Starting == 0
	})
	if err := hs.attach.alive(); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("%d of %d replicas registered (%d starting; failing: %v): %w", ai.Replicas-ai.Starting, live, ai.Starting, ai.Failing, err)
	}
	return nil
}

// close stops the attach manager (its replicas with it), the broker and
// NATS, and removes the round's files.
func (hs *hostSystem) close() error {
	var errs []error
	if hs.attach != nil {
		errs = append(errs, hs.attach.stop(2*time.Second+2*time.Second+10*time.Second))
	}
	if hs.broker != nil {
		errs = append(errs, hs.broker.stop(10*time.Second))
	}
	hs.system.close()
	if hs.tmp != "" {
		_ = os.RemoveAll(hs.tmp)
	}
	return errors.Join(errs...)
}

// loadResult is what the paced load measured.
type loadResult struct {
	sent, errors int
	achieved     float64 // answered calls per second
	p50, p99     time.Duration
	firstErr     error
}

// paced calls services round robin at rate calls per second for d, each
// call at its due time whatever the others do (an open loop: a slow
// answer does not slow the load), and times each from its due time.
func paced(ctx context.Context, cli *client.Client, services []string, rate int, d time.Duration) loadResult {
	interval := time.Second / time.Duration(rate)
	n := max(1, int(d/interval))
	order := rand.Perm(len(services))
	lats := make([]time.Duration, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		res  loadResult
		last time.Time
	)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		if ctx.Err() != nil {
			break
		}
		res.sent++
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			svc := services[order[i%len(order)]]
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			got, err := cli.Call(c, svc, []byte(svc))
			cancel()
			done := time.Now()
			if err == nil && string(got) != svc {
				err = fmt.Errorf("%s answered %q", svc, got)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.errors++
				if res.firstErr == nil {
					res.firstErr = err
				}
				lats[i] = -1
				return
			}
			lats[i] = done.Sub(due)
			if done.After(last) {
				last = done
			}
		}(i, due)
	}
	wg.Wait()
	ok := lats[:0]
	for _, l := range lats[:res.sent] {
		if l >= 0 {
			ok = append(ok, l)
		}
	}
	if span := max(last.Sub(start), time.Duration(res.sent)*interval); span > 0 {
		res.achieved = float64(len(ok)) / span.Seconds()
	}
	res.p50, res.p99 = percentile(ok, 50), percentile(ok, 99)
	return res
}
