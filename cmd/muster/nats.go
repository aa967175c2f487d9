package main

import (
	"fmt"
	"os/signal"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/internal/health"
)

// natsCommand is `muster nats`.
func natsCommand() *cli.Command {
	return &cli.Command{
		Name:  "nats",
		Usage: "run only a NATS node: embedded NATS with JetStream, alone or as a node of a NATS cluster (no broker, no attach manager)",
		Description: "The NATS part of `muster up`, with the same data directory, credentials and flags.\n" +
			"With --cluster-listen and --routes it joins a NATS cluster: three nodes (any mix of\n" +
			"`muster nats` and `muster up`) form a JetStream cluster that keeps 3 copies of Muster's\n" +
			"queue and registrations and keeps serving when one node is lost. With credentials every\n" +
			"node needs the same keys: `muster auth init --dir DIR` once, then --keys DIR/keys on each.\n" +
			"It says when the cluster has JetStream and runs until SIGINT, SIGTERM or SIGHUP.\n\n" + exitStatusHelp,
		Flags:  append(nodeFlags(), logLevelFlag(), httpFlag("")),
		Action: runNATS,
	}
}

func runNATS(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, stopSignals...)
	defer stop()
	var cleanup stack
	defer cleanup.run()
	n, err := startNode(c, log, &cleanup)
	if err != nil {
		return err
	}
	w := c.App.ErrWriter
	fmt.Fprintf(w, "muster nats: NATS %s (%s)\n", n.server.ClientURL(), n.where)
	writeWhere(w, "muster nats", append(n.clusterLines(),
		[2]string{"data", dataWhere(n)},
		[2]string{"credentials", credsWhere(n)},
	))
	web, err := listenHTTP(c, log, "muster nats")
	if err != nil {
		return err
	}
	cleanup.push(web.close)
	web.add([]health.Check{jetStreamCheck(n)}, nil)
	// A node waits for its cluster as long as it runs: the others may
	// need it for their quorum.
	if err := waitCluster(ctx, n, w, "muster nats", 0, log); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting
		}
		return err
	}
	web.ready()
	fmt.Fprintf(w, "muster nats: ready\n")
	<-ctx.Done()
	fmt.Fprintf(w, "muster nats: stopping\n")
	log.Info("shutting down")
	return nil
}
