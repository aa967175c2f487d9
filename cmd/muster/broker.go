package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/signal"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/placement"
)

// startTimeout bounds how long starting a component may take.
const startTimeout = 30 * time.Second

// defaultTimeoutFlag is --default-timeout, the broker's DefaultTimeout.
func defaultTimeoutFlag() cli.Flag {
	return &cli.DurationFlag{Name: "default-timeout", Value: 30 * time.Second, Usage: "deadline of requests that carry none"}
}

// placementFlag is --placement, the broker's default placement scheme.
func placementFlag() cli.Flag {
	return &cli.StringFlag{Name: "placement", Usage: "placement `SCHEME` of services the pool sets none for (p2c, users, ratio, memory, cpu, events, bandwidth, random, round-robin; default p2c)"}
}

// brokerConfig is the broker's config from the flags.
func brokerConfig(c *cli.Context, log *slog.Logger) (broker.Config, error) {
	scheme, err := placement.Parse(c.String("placement"))
	if err != nil {
		return broker.Config{}, fmt.Errorf("--placement: %w", err)
	}
	return broker.Config{DefaultTimeout: c.Duration("default-timeout"), Logger: log, Version: version, Placement: scheme}, nil
}

// brokerCommand is `muster broker`.
func brokerCommand() *cli.Command {
	return &cli.Command{
		Name:  "broker",
		Usage: "run a broker against an existing NATS server until SIGINT, SIGTERM or SIGHUP",
		Description: "Connects to --server (default " + natsconn.DefaultURL + "), which must have JetStream.\n" +
			"Several brokers may run against one NATS system.\n\n" + exitStatusHelp,
		Flags:  connFlags(defaultTimeoutFlag(), placementFlag(), clusterWaitFlag(), logLevelFlag(), httpFlag(""), pprofFlag(), panelCredsFlag()),
		Action: runBroker,
	}
}

func runBroker(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	bcfg, err := brokerConfig(c, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, stopSignals...)
	defer stop()
	web, err := listenHTTP(c, log, "muster broker")
	if err != nil {
		return err
	}
	defer web.close()
	nc, err := connect(c, "muster broker", auth.RoleBroker)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := waitJetStream(ctx, nc, c.App.ErrWriter, "muster broker", c.Duration("cluster-wait")); err != nil {
		return err
	}
	stopPanel, err := daemonPanel(c, web, "muster broker", log)
	if err != nil {
		return err
	}
	defer stopPanel()
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	b, err := broker.Start(sctx, nc, bcfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := b.Shutdown(sctx); err != nil {
			log.Warn("broker shutdown did not finish", "err", err)
		}
	}()
	fmt.Fprintf(c.App.ErrWriter, "muster broker %s on %s\n", b.ID(), nc.ConnectedUrlRedacted())
	web.add(b.HealthChecks(), b.Collector())
	web.ready()
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
