package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/cmd/muster/internal/bench"
)

// benchCommand is `muster bench`.
func benchCommand() *cli.Command {
	d := bench.Defaults()
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure Muster against raw NATS and the spawn floor, in the same run",
		ArgsUsage: "SCENARIO... (" + strings.Join(bench.Scenarios, " ") + ", or all)",
		Description: "Each scenario measures Muster and its baseline in alternating rounds of one\n" +
			"run and prints both figures, their ratio and the verdict against its target\n" +
			"(docs/PERFORMANCE.md). NATS is embedded unless --server is given.\n" +
			"Exit status 0 when every judged figure meets its target, 3 when one misses.",
		Flags: connFlags(
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per scenario"},
			&cli.BoolFlag{Name: "insecure", Usage: "run the embedded server without credentials (default: as muster up, with them)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the whole run to `FILE` (go tool pprof)"},
			&cli.IntFlag{Name: "clients", Value: d.Clients, Usage: "warm, conv: concurrent callers"},
			&cli.IntFlag{Name: "replicas", Value: d.Replicas, Usage: "warm, conv: replicas and raw responders"},
			&cli.IntFlag{Name: "capacity", Usage: "warm, conv: conversations per replica (default: clients)"},
			&cli.IntFlag{Name: "conv-messages", Value: d.ConvMessages, Usage: "conv: messages per conversation, NEW and the last OLD included (≥ 2; the target is judged at the default)"},
			&cli.BoolFlag{Name: "loop-handler", Usage: "warm, conv: the replicas serve with a Receive/Reply loop (default: Conv.Steps)"},
			&cli.DurationFlag{Name: "duration", Value: d.Duration, Usage: "warm, conv: measuring time per system; host: load time, and rest time (rounded up to whole heartbeats)"},
			&cli.IntFlag{Name: "reps", Value: d.Reps, Usage: "cold: repetitions per system"},
			&cli.StringFlag{Name: "floor", Usage: "cold: the baseline program `FILE` (go build ./examples/floor; default: built from the module)"},
			&cli.StringFlag{Name: "worker", Usage: "cold, host: the replica program `FILE` (go build ./examples/echo-worker; default: built from the module)"},
			&cli.IntFlag{Name: "burst", Value: d.Burst, Usage: "burst: concurrent calls"},
			&cli.IntFlag{Name: "max-replicas", Value: d.MaxReplicas, Usage: "burst: the service's max replicas"},
			&cli.DurationFlag{Name: "idle-timeout", Value: d.IdleTimeout, Usage: "burst, idle: replicas' idle timeout"},
			&cli.IntFlag{Name: "services", Usage: "scale: services; host: configured services", DefaultText: fmt.Sprintf("%d for scale, %d for host", d.Services, d.HostServices)},
			&cli.IntFlag{Name: "hosts", Value: d.Hosts, Usage: "scale: simulated attach managers"},
			&cli.IntFlag{Name: "live", Value: d.Live, Usage: "host: live replicas, one per service (at most 64 per service when there are fewer services)"},
			&cli.IntFlag{Name: "rate", Value: d.Rate, Usage: "host: calls per second of the paced load"},
		),
		Action: runBench,
	}
}

func runBench(c *cli.Context) error {
	names := c.Args().Slice()
	if len(names) == 0 {
		return fmt.Errorf("bench: name a scenario: %s, or all", strings.Join(bench.Scenarios, " "))
	}
	if len(names) == 1 && names[0] == "all" {
		names = bench.Scenarios
	}
	for _, n := range names { // all of them before the first runs
		if !slices.Contains(bench.Scenarios, n) {
			return fmt.Errorf("bench: unknown scenario %q: want %s, or all", n, strings.Join(bench.Scenarios, " "))
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := bench.Config{
		Conn: connConfigFromCLI(c), Executable: exe,
		Clients: c.Int("clients"), Replicas: c.Int("replicas"), Capacity: c.Int("capacity"), LoopHandler: c.Bool("loop-handler"), ConvMessages: c.Int("conv-messages"), Duration: c.Duration("duration"),
		Reps: c.Int("reps"), Burst: c.Int("burst"), MaxReplicas: c.Int("max-replicas"), IdleTimeout: c.Duration("idle-timeout"),
		Services: bench.Defaults().Services, Hosts: c.Int("hosts"), Insecure: c.Bool("insecure"),
		HostServices: bench.Defaults().HostServices, Live: c.Int("live"), Rate: c.Int("rate"),
		Floor: c.String("floor"), Worker: c.String("worker"),
	}
	if c.IsSet("services") {
		cfg.Services, cfg.HostServices = c.Int("services"), c.Int("services")
	}
	if cfg.ConvMessages < 2 {
		return fmt.Errorf("bench: --conv-messages %d: a conversation has at least 2 messages (the NEW and the last OLD)", cfg.ConvMessages)
	}
	if cfg.Clients < 1 || cfg.Replicas < 1 || cfg.Reps < 1 || cfg.Burst < 1 || cfg.MaxReplicas < 1 || cfg.Services < 1 || cfg.Hosts < 1 ||
		cfg.Live < 1 || cfg.Rate < 1 || cfg.Duration <= 0 || cfg.IdleTimeout <= 0 {
		return fmt.Errorf("bench: counts and durations must be positive")
	}
	if cfg.Live > 64*cfg.HostServices {
		return fmt.Errorf("bench: --live %d on %d services: at most 64 live replicas per service", cfg.Live, cfg.HostServices)
	}
	if f := c.String("cpuprofile"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var failed []string
	for _, name := range names {
		res, err := bench.Run(c.Context, name, cfg)
		if err != nil {
			return err
		}
		if err := bench.Print(c.App.Writer, res, c.Bool("json")); err != nil {
			return err
		}
		if res.Verdict == "fail" {
			failed = append(failed, name)
		}
	}
	if len(failed) > 0 {
		return &targetsMissedError{failed}
	}
	return nil
}

// targetsMissedError is bench's verdict when a figure missed its target:
// exit status 3, unlike any other error.
type targetsMissedError struct{ scenarios []string }

func (e *targetsMissedError) Error() string {
	return "bench: targets missed: " + strings.Join(e.scenarios, ", ")
}
