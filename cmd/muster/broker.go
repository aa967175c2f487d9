package main

import (
	"context"
	"fmt"
	"os/signal"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/natsconn"
)

// startTimeout bounds how long starting a component may take.
const startTimeout = 30 * time.Second

// defaultTimeoutFlag is --default-timeout, the broker's DefaultTimeout.
func defaultTimeoutFlag() cli.Flag {
	return &cli.DurationFlag{Name: "default-timeout", Value: 30 * time.Second, Usage: "deadline of requests that carry none"}
}

// brokerCommand is `muster broker`.
func brokerCommand() *cli.Command {
	return &cli.Command{
		Name:  "broker",
		Usage: "run a broker against an existing NATS server until SIGINT, SIGTERM or SIGHUP",
		Description: "Connects to --server (default " + natsconn.DefaultURL + "), which must have JetStream.\n" +
			"Several brokers may run against one NATS system.\n\n" + exitStatusHelp,
		Flags:  connFlags(defaultTimeoutFlag(), logLevelFlag(), httpFlag(""), pprofFlag(), panelCredsFlag()),
		Action: runBroker,
	}
}

func runBroker(c *cli.Context) error {
	log, err := newLogger(c)
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
	stopPanel, err := daemonPanel(c, web, "muster broker", log)
	if err != nil {
		return err
	}
	defer stopPanel()
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	b, err := broker.Start(sctx, nc, broker.Config{DefaultTimeout: c.Duration("default-timeout"), Logger: log, Version: version})
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
