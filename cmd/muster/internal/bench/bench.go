// Package bench is `muster bench`: scenarios that measure Muster and its
// baseline in the same run, in alternating rounds, and judge the figures
// against their targets (docs/PERFORMANCE.md says where they come from).
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/embedded"
	"github.com/musterhq/muster/internal/natsconn"
)

// Config are the knobs of all scenarios; each uses the ones it needs.
type Config struct {
	Conn       natsconn.Config // NATS to use; URL "" starts an embedded server
	Executable string          // the muster binary (for `example echo` replicas)
	// Floor and Worker are the cold scenario's programs: examples/floor
	// (the baseline: NATS only, no Muster code) and examples/echo-worker
	// (the replica a user would write). Empty: built with `go build` from
	// the module the bench runs in.
	Floor, Worker string
	Clients       int           // warm, conv: concurrent callers (16)
	Replicas      int           // warm, conv: warm replicas and raw responders (2)
	Capacity      int           // warm, conv: conversations per replica (0: clients, so no call waits for a slot)
	LoopHandler   bool          // warm, conv: the replicas' handler is a Receive/Reply loop (default: Conv.Steps)
	ConvMessages  int           // conv: messages per conversation, NEW and last OLD included (10)
	Duration      time.Duration // warm, conv: measuring time per system; host: load time, and rest time rounded up to whole heartbeats (5s)
	Reps          int           // cold: repetitions per system (30)
	Burst         int           // burst: concurrent calls (1000)
	MaxReplicas   int           // burst: the service's max (16)
	IdleTimeout   time.Duration // burst, idle: replicas' idle timeout (2s)
	Services      int           // scale: services (10000)
	Hosts         int           // scale: simulated attach managers (100)
	HostServices  int           // host: configured services (1000)
	Live          int           // host: live replicas, one per service while there are enough (200)
	Rate          int           // host: calls per second of the paced load (1000)
	Logger        *slog.Logger  // default: discard
	// Insecure runs the embedded server without credentials. By default
	// it runs as `muster up` does: operator mode, each participant with
	// its role's credentials (replicas their own, scoped to the service),
	// so the figures include the cost of permission checks. With --server
	// the given connection settings are used for everything.
	Insecure bool
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{Clients: 16, Replicas: 2, ConvMessages: 10, Duration: 5 * time.Second, Reps: 30, Burst: 1000, MaxReplicas: 16,
		IdleTimeout: 2 * time.Second, Services: 10000, Hosts: 100,
		HostServices: 1000, Live: 200, Rate: 1000}
}

// Figure is one measured quantity: Muster's value, the baseline's (when
// the scenario has one) and the target it is judged by.
type Figure struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Muster   float64 `json:"muster"`
	Baseline float64 `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"` // Muster / baseline
	Target   string  `json:"target,omitempty"`
	Pass     *bool   `json:"pass,omitempty"` // nil: reported, not judged
}

// Result is one scenario's outcome.
type Result struct {
	Scenario string   `json:"scenario"`
	Verdict  string   `json:"verdict"` // "pass", "fail" or "report"
	Figures  []Figure `json:"figures"`
	Notes    []string `json:"notes,omitempty"`
	Machine  string   `json:"machine"`
	Took     float64  `json:"took_s"`
}

// Scenarios lists the scenario names.
var Scenarios = []string{"warm", "conv", "cold", "standby", "burst", "idle", "scale", "host", "placement"}

// Run runs one scenario.
func Run(ctx context.Context, scenario string, cfg Config) (*Result, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	start := time.Now()
	var res *Result
	var err error
	switch scenario {
	case "warm":
		res, err = runWarm(ctx, cfg)
	case "conv":
		res, err = runConv(ctx, cfg)
	case "cold":
		res, err = runCold(ctx, cfg)
	case "standby":
		res, err = runStandby(ctx, cfg)
	case "burst":
		res, err = runBurst(ctx, cfg)
	case "idle":
		res, err = runIdle(ctx, cfg)
	case "scale":
		res, err = runScale(ctx, cfg)
	case "host":
		res, err = runHost(ctx, cfg)
	case "placement":
		res, err = runPlacement(ctx, cfg)
	default:
		return nil, fmt.Errorf("bench: unknown scenario %q (one of %s)", scenario, strings.Join(Scenarios, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("bench %s: %w", scenario, err)
	}
	res.Scenario = scenario
	res.Machine = machine()
	switch {
	case scenario == "placement": // a simulation: no system
	case cfg.Conn.URL != "":
		res.Notes = append(res.Notes, "security: the --server's own (the given connection settings for every participant)")
	case cfg.Insecure:
		res.Notes = append(res.Notes, "security: INSECURE, embedded server without credentials")
	default:
		res.Notes = append(res.Notes, "security: credentials on, as in muster up (each participant with its role's permissions; --insecure for none)")
	}
	res.Took = time.Since(start).Seconds()
	res.Verdict = "report"
	for _, f := range res.Figures {
		if f.Pass == nil {
			continue
		}
		if !*f.Pass {
			res.Verdict = "fail"
			break
		}
		res.Verdict = "pass"
	}
	return res, nil
}

// judge makes a figure with a verdict.
func judge(f Figure, ok bool) Figure { f.Pass = &ok; return f }

// ratioFigure fills Ratio and judges it against limit (at least or at most).
func ratioFigure(name, unit string, muster, base, limit float64, atLeast bool) Figure {
	f := Figure{Name: name, Unit: unit, Muster: muster, Baseline: base}
	if base > 0 {
		f.Ratio = muster / base
	}
	if atLeast {
		f.Target = fmt.Sprintf("ratio ≥ %.2g", limit)
		return judge(f, f.Ratio >= limit)
	}
	f.Target = fmt.Sprintf("ratio ≤ %.2g", limit)
	return judge(f, f.Ratio > 0 && f.Ratio <= limit)
}

func machine() string {
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}

// Print writes results as a table, or as one JSON object per line.
func Print(w io.Writer, res *Result, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(res)
	}
	fmt.Fprintf(w, "%s: %s  (%.1fs, %s)\n", res.Scenario, strings.ToUpper(res.Verdict), res.Took, res.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  FIGURE\tMUSTER\tBASELINE\tRATIO\tTARGET\tOK")
	for _, f := range res.Figures {
		base, ratio := "-", "-"
		if f.Baseline != 0 {
			base = num(f.Baseline) + " " + f.Unit
		}
		if f.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f", f.Ratio)
		}
		ok := ""
		if f.Pass != nil {
			ok = map[bool]string{true: "yes", false: "NO"}[*f.Pass]
		}
		fmt.Fprintf(tw, "  %s\t%s %s\t%s\t%s\t%s\t%s\n", f.Name, num(f.Muster), f.Unit, base, ratio, f.Target, ok)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

func num(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// percentile returns the p-th percentile (0..100) of d (sorted in place).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(p / 100 * float64(len(d)-1))
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// system is the NATS server (embedded unless cfg.Conn.URL is set) and a
// broker the scenarios share.
type system struct {
	cfg    Config
	srv    *server.Server
	dir    string
	url    string
	keys   *auth.Keys // nil: no credentials of our own (insecure or --server)
	conns  []*nats.Conn
	broker *broker.Broker
}

func startSystem(ctx context.Context, cfg Config) (_ *system, retErr error) {
	s, err := startNATS(cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.close()
		}
	}()
	nc, err := s.connect("muster-bench broker", auth.RoleBroker)
	if err != nil {
		return nil, err
	}
	if s.broker, err = broker.Start(ctx, nc, broker.Config{Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	return s, nil
}

// startNATS starts the system's NATS server (unless cfg.Conn.URL names
// one) without a broker: the embedded server, as `muster up` runs it,
// with the credentials of every role in <dir>/creds and the signing keys
// (the replica signer's seed among them) in <dir>/keys.
func startNATS(cfg Config) (_ *system, retErr error) {
	s := &system{cfg: cfg, url: cfg.Conn.URL}
	defer func() {
		if retErr != nil {
			s.close()
		}
	}()
	if s.url == "" {
		dir, err := os.MkdirTemp("", "muster-bench-")
		if err != nil {
			return nil, err
		}
		s.dir = dir
		ecfg := embedded.Config{Listen: "127.0.0.1:-1", StoreDir: dir}
		if !cfg.Insecure {
			if s.keys, err = auth.LoadOrCreateKeys(filepath.Join(dir, "keys")); err != nil {
				return nil, err
			}
			for _, role := range auth.Roles {
				if _, err := auth.WriteCreds(s.keys, filepath.Join(dir, "creds"), role); err != nil {
					return nil, err
				}
			}
			ecfg.Configure = func(o *server.Options) error { return auth.ServerOptions(s.keys, o) }
		}
		if s.srv, err = embedded.Start(ecfg); err != nil {
			return nil, err
		}
		s.url = s.srv.ClientURL()
	}
	return s, nil
}

// connCfg is how this system's participants of role reach NATS.
func (s *system) connCfg(role auth.Role) natsconn.Config {
	c := s.cfg.Conn
	c.URL = s.url
	if s.keys != nil {
		c.CredsFile = filepath.Join(s.dir, "creds", auth.CredsFile(role))
	}
	return c
}

// connect connects as role.
func (s *system) connect(name string, role auth.Role) (*nats.Conn, error) {
	c := s.connCfg(role)
	c.Name = name
	return s.connectWith(c)
}

// connectReplica connects as replica id of service, with the credentials
// an attach manager would give it.
func (s *system) connectReplica(name, id, service string) (*nats.Conn, error) {
	c := s.connCfg(auth.RoleReplica)
	c.Name = name
	if s.keys != nil {
		creds, err := s.keys.ReplicaSigner().Creds(id, service)
		if err != nil {
			return nil, err
		}
		if c.CredsFile, err = auth.WriteCredsFile(filepath.Join(s.dir, "creds", id+".creds"), creds); err != nil {
			return nil, err
		}
	}
	return s.connectWith(c)
}

func (s *system) connectWith(c natsconn.Config) (*nats.Conn, error) {
	nc, err := c.Connect()
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, nc)
	return nc, nil
}

func (s *system) close() {
	if s.broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.broker.Shutdown(ctx)
		cancel()
	}
	for i := len(s.conns) - 1; i >= 0; i-- {
		s.conns[i].Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
