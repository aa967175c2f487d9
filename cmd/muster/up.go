package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/natsconn"
)

// stopSignals stop the daemons (up, broker, attach) gracefully: replicas
// quiesce within their grace, registrations are removed, nothing is left
// behind. SIGHUP is one of them, so closing the terminal stops a `muster up`
// the same way Ctrl-C does.
var stopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// stopTimeout bounds each step of the shutdown after the replicas' grace.
const stopTimeout = 10 * time.Second

// upCommand is `muster up`.
func upCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "run a local Muster system: embedded NATS with JetStream, a broker and an attach manager",
		Description: "Starts an embedded NATS server (or uses --server / MUSTER_URL), a broker and an\n" +
			"attach manager that starts replicas on demand: of the demo services (served by\n" +
			"this binary, `muster example echo|sleep`), or of the services in --config FILE.\n" +
			"Runs until SIGINT, SIGTERM or SIGHUP, then stops the replicas (after the config's grace),\n" +
			"the broker and NATS. The embedded server has no authentication: keep it on loopback.\n\n" + exitStatusHelp,
		Flags: connFlags(
			&cli.StringFlag{Name: "nats-listen", Value: "127.0.0.1:4222", Usage: "`HOST:PORT` the embedded NATS server listens on"},
			&cli.StringFlag{Name: "data", Usage: "`DIR` of the embedded server's JetStream store (default: $XDG_STATE_HOME/muster or ~/.local/state/muster)"},
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "attach config `FILE` instead of the built-in demo config"},
			&cli.BoolFlag{Name: "insecure", Usage: "run the embedded NATS server WITHOUT credentials: anyone who can reach it can serve, snoop on or stop Muster's work (default: credentials per role in DATA/creds, created on first start)"},
			&cli.BoolFlag{Name: "demo", Value: true, Usage: "run an attach manager with the demo config when there is no --config (--demo=false: no attach manager)"},
			defaultTimeoutFlag(),
			logLevelFlag(),
			httpFlag(defaultUpHTTP), pprofFlag(),
		),
		Action: runUp,
	}
}

// stack runs cleanup functions in the reverse order of their registration.
type stack []func()

func (s *stack) push(f func()) { *s = append(*s, f) }

func (s *stack) run() {
	for i := len(*s) - 1; i >= 0; i-- {
		(*s)[i]()
	}
	*s = nil
}

func runUp(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, stopSignals...)
	defer stop()
	var cleanup stack // replicas, broker, connection, NATS: the reverse of starting
	defer cleanup.run()

	connCfg, where, dataDir, credsDir, err := upNATS(c, log, &cleanup)
	if err != nil {
		return err
	}
	connCfg.Name = "muster up"
	brokerCfg := roleConn(connCfg, credsDir, auth.RoleBroker)
	nc, err := brokerCfg.Connect()
	if err != nil {
		return err
	}
	cleanup.push(nc.Close)
	fmt.Fprintf(c.App.ErrWriter, "muster up: NATS %s (%s)\n", nc.ConnectedUrlRedacted(), where)
	web, err := listenHTTP(c, log, "muster up")
	if err != nil {
		return err
	}
	cleanup.push(web.close)

	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	b, err := broker.Start(sctx, nc, broker.Config{DefaultTimeout: c.Duration("default-timeout"), Logger: log})
	if err != nil {
		return err
	}
	cleanup.push(func() {
		bounded(log, "broker shutdown", stopTimeout, func() {
			sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			_ = b.Shutdown(sctx)
		})
	})
	fmt.Fprintf(c.App.ErrWriter, "muster up: broker %s\n", b.ID())
	web.add(b.HealthChecks(), b.Collector())

	var cfg *attach.Config
	switch {
	case c.String("config") != "":
		if cfg, err = attach.LoadConfig(c.String("config")); err == nil {
			cfg.UseDataDir(dataDir) // one instance, one state: beside its NATS data
		}
	case c.Bool("demo"):
		cfg, err = demoConfig(dataDir)
	}
	if err != nil {
		return err
	}
	if cfg != nil {
		anc := nc // one connection, unless each role has its own credentials
		var signer *auth.ReplicaSigner
		if credsDir != "" {
			// The attach manager's user is named after its id: it may
			// write its own registration record and no other manager's.
			k, err := auth.LoadOrCreateKeys(filepath.Join(dataDir, "keys"))
			if err != nil {
				return err
			}
			ac, err := auth.UserCreds(k, auth.RoleAttach, cfg.Host.Name)
			if err != nil {
				return err
			}
			attCfg := roleConn(connCfg, credsDir, auth.RoleAttach)
			if _, err := auth.WriteCredsFile(attCfg.CredsFile, ac); err != nil {
				return err
			}
			if anc, err = attCfg.Connect(); err != nil {
				return err
			}
			cleanup.push(anc.Close)
			// Each replica gets credentials for its own service only.
			acc, err := auth.AccountOfCreds(attCfg.CredsFile)
			if err != nil {
				return err
			}
			if signer, err = auth.LoadReplicaSigner(filepath.Join(dataDir, "keys", auth.ReplicaSignerFile), acc); err != nil {
				return err
			}
		}
		m, err := startAttach(sctx, anc, roleConn(connCfg, credsDir, auth.RoleReplica), signer, cfg, log)
		if err != nil {
			return err
		}
		cleanup.push(func() {
			bounded(log, "attach manager shutdown", cfg.Host.Grace+stopTimeout, func() { m.Shutdown(context.Background()) })
		})
		web.add(m.HealthChecks(), m.Collector())
		names := make([]string, len(cfg.Services))
		for i, s := range cfg.Services {
			names[i] = s.Service
		}
		fmt.Fprintf(c.App.ErrWriter, "muster up: attach manager %s starts replicas on demand: %s\n", m.ID(), strings.Join(names, ", "))
		try := "muster call"
		if u := nc.ConnectedUrlRedacted(); u != natsconn.DefaultURL {
			try += " --server " + u
		}
		if credsDir != "" {
			try += " --creds " + filepath.Join(credsDir, string(auth.RoleClient)+".creds")
		}
		fmt.Fprintf(c.App.ErrWriter, "try: %s %s hello\n", try, names[0])
	}
	cancel()
	web.ready()

	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// bounded runs f and waits up to d for it, logging if it takes longer
// (f then finishes in the background; the process is about to exit).
func bounded(log *slog.Logger, what string, d time.Duration, f func()) {
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		log.Debug(what+" done", "took", time.Since(start))
	case <-t.C:
		log.Warn(what+" did not finish in time", "timeout", d)
	}
}
