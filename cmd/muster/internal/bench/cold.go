package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
)

// managed is a system plus an attach manager serving one echo service with
// the muster binary (`muster example echo`).
type managed struct {
	*system
	m       *attach.Manager
	cfg     *attach.Config
	service string
	cli     *client.Client
	tmp     string
}

// buildExamples returns the floor and echo-worker programs: cfg's, or
// built with `go build` into dir.
func buildExamples(ctx context.Context, cfg Config, dir string) (floor, worker string, err error) {
	if floor, err = buildProgram(ctx, cfg.Floor, "github.com/musterhq/muster/examples/floor", dir); err != nil {
		return "", "", err
	}
	if worker, err = buildProgram(ctx, cfg.Worker, "github.com/musterhq/muster/examples/echo-worker", dir); err != nil {
		return "", "", err
	}
	return floor, worker, nil
}

// buildProgram returns given, or builds pkg with `go build` into dir.
func buildProgram(ctx context.Context, given, pkg, dir string) (string, error) {
	if given != "" {
		return given, nil
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cannot build %s (%v: %s); run the bench inside the muster module, or give --floor and --worker (go build ./examples/floor ./examples/echo-worker)", pkg, err, msg)
	}
	return out, nil
}

func startManaged(ctx context.Context, cfg Config, kind string, svc func(*attach.ServiceConfig)) (_ *managed, retErr error) {
	if cfg.Executable == "" {
		return nil, errors.New("no muster binary to start replicas with")
	}
	sys, err := startSystem(ctx, cfg)
	if err != nil {
		return nil, err
	}
	mg := &managed{system: sys, service: "BENCH/" + kind + "/" + nuid.Next()}
	defer func() {
		if retErr != nil {
			mg.close()
		}
	}()
	if mg.tmp, err = os.MkdirTemp("", "muster-bench-attach-"); err != nil {
		return nil, err
	}
	ac := attach.DemoConfig(cfg.Executable)
	ac.Host.Name = "bench-" + nuid.Next()
	ac.Host.StateDir = filepath.Join(mg.tmp, "state")
	ac.Host.LogDir = filepath.Join(mg.tmp, "logs")
	ac.Host.TempDir = filepath.Join(mg.tmp, "tmp")
	ac.Host.Heartbeat = time.Second
	ac.Host.Grace = 2 * time.Second
	sc := ac.Services[0] // the demo echo's defaults
	sc.Service = mg.service
	sc.Args = []string{"example", "echo"}
	svc(&sc)
	ac.Services = []attach.ServiceConfig{sc}
	ac.Host.MaxReplicas = max(64, sc.Max)
	mg.cfg = ac
	nc, err := sys.connect("bench attach", auth.RoleAttach)
	if err != nil {
		return nil, err
	}
	opts := attach.Options{Conn: sys.connCfg(auth.RoleReplica), Logger: cfg.Logger, Version: "bench"}
	if sys.keys != nil {
		opts.ReplicaCreds = sys.keys.ReplicaSigner().Creds
	}
	if mg.m, err = attach.Start(ctx, nc, ac, opts); err != nil {
		return nil, err
	}
	cnc, err := sys.connect("bench client", auth.RoleClient)
	if err != nil {
		return nil, err
	}
	if mg.cli, err = client.New(cnc); err != nil {
		return nil, err
	}
	// The broker must see the manager before the first call.
	if err := waitFor(ctx, 10*time.Second, func() bool { _, ok := sys.broker.ChooseAttach(mg.service); return ok }); err != nil {
		return nil, fmt.Errorf("broker never saw the attach manager: %w", err)
	}
	return mg, nil
}

func (mg *managed) close() {
	if mg.m != nil {
		mg.m.Shutdown(context.Background())
	}
	mg.system.close()
	if mg.tmp != "" {
		_ = os.RemoveAll(mg.tmp)
	}
}

// leftovers counts state records and temp dirs the manager left.
func (mg *managed) leftovers() (records, dirs int) {
	records, dirs, _ = attach.Leftovers(mg.cfg)
	return records, dirs
}

// waitFor polls cond every millisecond until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	return pollEvery(ctx, d, time.Millisecond, cond)
}

// pollEvery polls cond every step until it holds or d passes.
func pollEvery(ctx context.Context, d, step time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(step)
	}
	return nil
}

// startExamples builds the floor and the echo worker and starts a managed
// system whose one service runs the echo worker, one conversation per
// replica (set adjusts the service further). close undoes both.
func startExamples(ctx context.Context, cfg Config, kind string, set func(*attach.ServiceConfig)) (mg *managed, floor string, close func(), err error) {
	bin, err := os.MkdirTemp("", "muster-bench-bin-")
	if err != nil {
		return nil, "", nil, err
	}
	floor, workerExe, err := buildExamples(ctx, cfg, bin)
	if err != nil {
		_ = os.RemoveAll(bin)
		return nil, "", nil, err
	}
	mg, err = startManaged(ctx, cfg, kind, func(s *attach.ServiceConfig) {
		s.Max, s.Capacity, s.ExitAfterConversation, s.IdleTimeout = 1, 1, true, 0
		s.Program, s.Args = workerExe, nil // the replica a user writes
		set(s)
	})
	if err != nil {
		_ = os.RemoveAll(bin)
		return nil, "", nil, err
	}
	return mg, floor, func() { mg.close(); _ = os.RemoveAll(bin) }, nil
}

func runCold(ctx context.Context, cfg Config) (*Result, error) {
	mg, floor, done, err := startExamples(ctx, cfg, "COLD", func(*attach.ServiceConfig) {})
	if err != nil {
		return nil, err
	}
	defer done()
	baseSubject := "bench.floor." + nuid.Next()
	nc, err := mg.connect("bench cold baseline", auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	var ml, bl []time.Duration
	phases := make([][]time.Duration, len(phaseNames))
	for i := 0; i < cfg.Reps; i++ {
		if err := waitFor(ctx, 10*time.Second, func() bool { return mg.m.Info().Replicas == 0 }); err != nil {
			return nil, fmt.Errorf("replica of round %d never exited: %w", i, err)
		}
		total, ph, err := mg.coldCall(ctx, nc)
		if err != nil {
			return nil, fmt.Errorf("muster cold call %d: %w", i, err)
		}
		ml = append(ml, total)
		for k, d := range ph {
			phases[k] = append(phases[k], d)
		}

		subject := baseSubject + "." + strconv.Itoa(i) // a subject of its own: the last round's floor may still be draining
		d, err := execAndCall(ctx, floor, append(mg.connCfg(auth.RoleAdmin).Env(), "FLOOR_SUBJECT="+subject), subject, nc)
		if err != nil {
			return nil, fmt.Errorf("baseline %d: %w", i, err)
		}
		bl = append(bl, d)
	}
	figs := []Figure{
		ratioFigure("p50 zero → first reply", "ms", ms(percentile(ml, 50)), ms(percentile(bl, 50)), 1.5, false),
		ratioFigure("p99 zero → first reply", "ms", ms(percentile(ml, 99)), ms(percentile(bl, 99)), 2, false),
	}
	for k, name := range phaseNames {
		figs = append(figs, Figure{Name: "phase p50: " + name, Unit: "ms", Muster: ms(percentile(phases[k], 50))})
	}
	daemons, err := mg.daemonPhases()
	if err != nil {
		return nil, err
	}
	figs = append(figs, daemons...)
	return &Result{
		Figures: figs,
		Notes:   []string{fmt.Sprintf("%d alternating repetitions; Muster: a call at zero replicas through broker and attach manager, which exec's examples/echo-worker; baseline (the floor): exec examples/floor (NATS only: connect, subscribe, answer), request its subject until it answers", cfg.Reps)},
	}, nil
}

// execAndCall starts a program by hand and times start → first reply on
// subject.
func execAndCall(ctx context.Context, exe string, env []string, subject string, nc *nats.Conn) (time.Duration, error) {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	defer func() {
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}()
	deadline := t.Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		_, err := nc.Request(subject, []byte("cold"), 2*time.Second)
		if err == nil {
			return time.Since(t), nil
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			return 0, fmt.Errorf("%w (program stderr: %q)", err, stderr.String())
		}
		time.Sleep(100 * time.Microsecond)
	}
	_ = cmd.Process.Kill()
	return 0, errors.New("the worker never answered")
}

// phaseNames are the phases of a cold call, in order; each is measured
// from the end of the one before. Times come from the bench process
// (µs) except the replica's start, which is its record's "started" (ms,
// the same machine's clock).
var phaseNames = []string{
	"queued (call → the broker's \"queued\")",
	"notified (→ the attach notification, as observed)",
	"exec + start + connect (→ the replica's recorded start, taken once it has connected)",
	"set up + register (JetStream look-ups, subscriptions → its registration seen in KV)",
	"first pull (→ its \"working\")",
	"reply (→ the reply)",
}

// daemonNames name the start histograms the broker and the attach
// manager keep (docs/OPERATIONS.md, "Start phases"), by metric and phase.
var daemonNames = []struct{ metric, phase, name string }{
	{"muster_broker_notify_delay_seconds", "", "notify (broker: queued → notification sent)"},
	{"muster_attach_start_phase_seconds", "exec", "exec (attach: notified → process exec'd)"},
	{"muster_attach_start_phase_seconds", "connect", "connect (→ the replica connected)"},
	{"muster_attach_start_phase_seconds", "register", "register (→ its registration seen by the manager)"},
	{"muster_attach_start_seconds", "", "start total (attach: notified → registration seen)"},
}

// daemonPhases returns the means of the broker's and the attach manager's
// start histograms for the bench's service, as /metrics serves them: the
// same cold starts seen from inside.
func (mg *managed) daemonPhases() ([]Figure, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{mg.m.Collector(), mg.broker.Collector()} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	var out []Figure
	for _, d := range daemonNames {
		for _, f := range fams {
			if f.GetName() != d.metric {
				continue
			}
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				h := m.GetHistogram()
				if labels["service"] != mg.service || labels["phase"] != d.phase || h.GetSampleCount() == 0 {
					continue
				}
				out = append(out, Figure{Name: "phase mean, daemons: " + d.name, Unit: "ms",
					Muster: h.GetSampleSum() / float64(h.GetSampleCount()) * 1000})
			}
		}
	}
	return out, nil
}

// coldCall makes one cold call as a plain NATS client does (on
// muster.call, with Muster-Progress) and times it and its phases.
func (mg *managed) coldCall(ctx context.Context, nc *nats.Conn) (time.Duration, []time.Duration, error) {
	svc := proto.MustService(mg.service)
	notified := make(chan time.Time, 4)
	nsub, err := nc.Subscribe(proto.NotifySubject(svc), func(*nats.Msg) {
		select {
		case notified <- time.Now():
		default:
		}
	})
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = nsub.Unsubscribe() }()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, nil, err
	}
	kv, err := js.KeyValue(ctx, proto.ReplicaBucket)
	if err != nil {
		return 0, nil, err
	}
	wctx, cancelW := context.WithCancel(ctx)
	defer cancelW()
	w, err := kv.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		return 0, nil, err
	}
	type reg struct {
		seen    time.Time
		started time.Time
	}
	registered := make(chan reg, 1)
	go func() {
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if ri, err := proto.DecodeReplicaInfo(e.Value()); err == nil && ri.Service == mg.service {
				registered <- reg{seen: time.Now(), started: time.UnixMilli(ri.Started)}
				return
			}
		}
	}()
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 8)
	rsub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = rsub.Unsubscribe() }()
	m := nats.NewMsg(proto.CallSubject(svc))
	m.Reply, m.Data = inbox, []byte("cold")
	m.Header.Set(proto.HdrProgress, "1")
	m.Header.Set(proto.HdrTimeout, "10000")
	t0 := time.Now()
	if err := nc.PublishMsg(m); err != nil {
		return 0, nil, err
	}
	var tq, tw, tr time.Time
	timeout := time.After(10 * time.Second)
	for tr.IsZero() {
		select {
		case r := <-replies:
			switch r.Header.Get(proto.HdrStatus) {
			case proto.StatusQueued:
				tq = time.Now()
			case proto.StatusWorking:
				tw = time.Now()
			default:
				if e := proto.ErrorFromHeader(r.Header); e != nil {
					return 0, nil, e
				}
				tr = time.Now()
			}
		case <-timeout:
			return 0, nil, errors.New("no reply within 10s")
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		}
	}
	var tn time.Time
	select {
	case tn = <-notified:
	case <-time.After(time.Second):
	}
	var rg reg
	select {
	case rg = <-registered:
	case <-time.After(time.Second):
	}
	// A phase that was not seen (a status that did not come) counts as
	// zero and the next one takes its time.
	points := []time.Time{tq, tn, rg.started, rg.seen, tw, tr}
	out := make([]time.Duration, len(points))
	prev := t0
	for i, p := range points {
		if p.IsZero() || p.Before(prev) {
			continue
		}
		out[i] = p.Sub(prev)
		prev = p
	}
	return tr.Sub(t0), out, nil
}
