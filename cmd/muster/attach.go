package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/natsconn"
)

// attachCommand is `muster attach`.
func attachCommand() *cli.Command {
	return &cli.Command{
		Name:  "attach",
		Usage: "run this host's attach manager: start replicas on demand from a local config",
		Description: "Registers every service in the config with the ATTACH role, starts replicas\n" +
			"when a broker asks, supervises them, and stops them all on SIGINT, SIGTERM or SIGHUP.\n" +
			"Programs come from the config file only, never from a message.\n" +
			"--check FILE validates a config and exits (0 good, 1 with every problem).\n\n" + exitStatusHelp,
		Flags: connFlags(
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "attach config `FILE` (YAML; see docs/OPERATIONS.md)"},
			&cli.StringFlag{Name: "check", Usage: "validate config `FILE` and exit"},
			&cli.StringFlag{Name: "replica-signer", EnvVars: []string{"MUSTER_REPLICA_SIGNER"}, Usage: "replica signing key seed `FILE` (<dir>/keys/replica-signer.nk of `muster auth init`): each replica gets its own credentials, scoped to its service; needs --creds"},
			&cli.StringFlag{Name: "replica-creds", EnvVars: []string{"MUSTER_REPLICA_CREDS"}, Usage: "NATS credentials `FILE` every replica gets (MUSTER_CREDS) when there is no --replica-signer; default: the manager's own connection settings"},
			clusterWaitFlag(),
			logLevelFlag(),
			httpFlag(""), pprofFlag(), panelCredsFlag(),
		),
		Action: runAttach,
	}
}

func runAttach(c *cli.Context) error {
	if f := c.String("check"); f != "" {
		cfg, err := attach.LoadConfig(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%s: ok: %d services, host %s, at most %d replicas\n", cfg.File, len(cfg.Services), cfg.Host.Name, cfg.Host.MaxReplicas)
		return nil
	}
	if c.String("config") == "" {
		return errors.New("attach: --config FILE is required (or --check FILE)")
	}
	cfg, err := attach.LoadConfig(c.String("config"))
	if err != nil {
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, stopSignals...)
	defer stop()
	connCfg := connConfigFromCLI(c)
	var signer *auth.ReplicaSigner
	if f := c.String("replica-signer"); f != "" {
		if c.String("replica-creds") != "" {
			return errors.New("attach: --replica-signer and --replica-creds are mutually exclusive")
		}
		if connCfg.CredsFile == "" {
			return errors.New("attach: --replica-signer needs --creds (the manager's attach credentials name the account its replicas join)")
		}
		acc, err := auth.AccountOfCreds(connCfg.CredsFile)
		if err != nil {
			return err
		}
		if signer, err = auth.LoadReplicaSigner(f, acc); err != nil {
			return err
		}
	}
	if connCfg.URL == "" {
		connCfg.URL = natsconn.DefaultURL
	}
	connCfg.Name = "muster attach " + cfg.Host.Name
	web, err := listenHTTP(c, log, "muster attach")
	if err != nil {
		return err
	}
	defer web.close()
	nc, err := connCfg.Connect()
	if err != nil {
		return connectHint(err, auth.RoleAttach)
	}
	defer nc.Close()
	if err := waitJetStream(ctx, nc, c.App.ErrWriter, "muster attach", c.Duration("cluster-wait")); err != nil {
		return err
	}
	stopPanel, err := daemonPanel(c, web, "muster attach", log)
	if err != nil {
		return err
	}
	defer stopPanel()
	replicaCfg := connCfg
	if f := c.String("replica-creds"); f != "" {
		replicaCfg.CredsFile = f // the replica role's, not the manager's
	}
	m, err := startAttach(ctx, nc, replicaCfg, signer, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "muster attach: %s serving %d services (config %s)\n", m.ID(), len(cfg.Services), cfg.File)
	web.add(m.HealthChecks(), m.Collector())
	web.ready()
	<-ctx.Done()
	log.Info("shutting down")
	bounded(log, "attach manager shutdown", cfg.Host.Grace+stopTimeout, func() { m.Shutdown(context.Background()) })
	return nil
}

// startAttach starts an attach manager whose replicas reach NATS with
// connCfg and, when signer is set, each with its own credentials.
func startAttach(ctx context.Context, nc *nats.Conn, connCfg natsconn.Config, signer *auth.ReplicaSigner, cfg *attach.Config, log *slog.Logger) (*attach.Manager, error) {
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	connCfg.Name = ""
	opts := attach.Options{Conn: connCfg, Version: versionString(), Logger: log}
	if signer != nil {
		opts.ReplicaCreds = signer.Creds
	}
	return attach.Start(sctx, nc, cfg, opts)
}

// demoConfig is the built-in attach config of `muster up`: the demo
// services, served by this very binary (`muster example echo|sleep`).
// host, if set, is its attach manager's host name (the node's --name).
// With an embedded server its state lives beside the NATS data (see
// attach.Config.UseDataDir).
func demoConfig(host, dataDir string) (*attach.Config, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the muster binary for the demo services: %w", err)
	}
	cfg := attach.DemoConfig(exe)
	if host != "" {
		// A node's name: several nodes of a cluster on one machine run
		// attach managers with ids of their own.
		cfg.Host.Name = host
	}
	cfg.UseDataDir(dataDir)
	return cfg, nil
}
