package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/adminops"
	"github.com/musterhq/muster/internal/auth"
)

// adminTimeout is --timeout of the admin commands.
func adminTimeout() cli.Flag {
	return &cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "give up after this long"}
}

// jsonFlag is --json of the listings.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON (stable field names) instead of a table"}
}

// serviceCommand is `muster service ls|show|reset`.
func serviceCommand() *cli.Command {
	return &cli.Command{
		Name:  "service",
		Usage: "inspect services, and reset failing ones",
		Subcommands: []*cli.Command{{
			Name:  "ls",
			Usage: "list services with their figures, combined over every broker, host and replica",
			Description: "Asks every broker (" + proto.BrokerStatsSubject + ") and reads the hosts' and replicas' registrations.\n" +
				"--json prints {\"services\":[...]} (docs/OPERATIONS.md \"Figures\").\n\n" + exitStatusHelp,
			Flags:  listFlags(),
			Action: runServiceLs,
		}, {
			Name:        "show",
			Usage:       "one service in detail, with its replicas",
			ArgsUsage:   "SERVICE",
			Description: "--json prints the service's figures and its replicas.\n\n" + exitStatusHelp,
			Flags:       connFlags(jsonFlag(), adminTimeout()),
			Action:      runServiceShow,
		}, {
			Name:      "reset",
			Usage:     "have every attach manager offering SERVICE forget that it is failing and try it again now",
			ArgsUsage: "SERVICE",
			Description: "Sends a request on " + proto.AttachResetPrefix + "C.N.S; each attach manager offering the\n" +
				"service clears its failing state, starts one probe replica and answers. Waits for\n" +
				"every live attach manager offering it (from the " + proto.AttachBucket + " bucket), at most --timeout.\n" +
				"--json prints {\"service\":S,\"reset\":[...]}, each an attach manager's answer.\n\n" + exitStatusHelp,
			Flags:  connFlags(jsonFlag(), adminTimeout()),
			Action: runServiceReset,
		}, placementCommand()},
	}
}

func runServiceReset(c *cli.Context) error {
	svc, err := oneArg(c, "SERVICE")
	if err != nil {
		return err
	}
	if _, err := proto.ParseService(svc); err != nil { // checked before anything is done
		return err
	}
	nc, err := connect(c, "muster service reset", auth.RoleAdmin)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	res, err := adminops.ResetService(ctx, nc, svc)
	if err != nil {
		return err
	}
	if len(res.Reset) < res.Offering {
		fmt.Fprintf(c.App.ErrWriter, "muster: %d of %d attach managers offering %s answered within %v\n", len(res.Reset), res.Offering, res.Service, c.Duration("timeout"))
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, res)
	}
	for _, r := range res.Reset {
		line := "reset " + r.Service + " on " + r.Attach
		if r.WasFailing != "" {
			line += " (was failing: " + r.WasFailing + ")"
		} else {
			line += " (was not failing)"
		}
		if r.Probe {
			line += "; probe replica started"
		}
		fmt.Fprintln(c.App.Writer, line)
	}
	return nil
}

// replicaCommand is `muster replica ls|show|stop|quiesce|logs`.
func replicaCommand() *cli.Command {
	return &cli.Command{
		Name:  "replica",
		Usage: "inspect and stop replicas, read their logs",
		Subcommands: []*cli.Command{
			{
				Name:  "ls",
				Usage: "list live replicas: where, for whom, how busy, since when",
				Description: "Reads the registrations in the " + proto.ReplicaBucket + " bucket (skipping expired ones) and\n" +
					"the hosts' process figures. --json prints {\"replicas\":[...]}.\n\n" + exitStatusHelp,
				Flags:  listFlags(),
				Action: runReplicaLs,
			},
			{
				Name:        "show",
				Usage:       "one replica in detail: counters, averages, open conversations",
				ArgsUsage:   "ID",
				Description: "--json prints the replica's registration and process figures.\n\n" + exitStatusHelp,
				Flags:       connFlags(jsonFlag(), adminTimeout()),
				Action:      runReplicaShow,
			},
			{
				Name:      "stop",
				Usage:     "stop a replica: gracefully (it takes no new work, open conversations finish within its grace), or --now",
				ArgsUsage: "ID",
				Description: "Sends QUIESCE (--now: IMMED, open conversations end with 0003/0010) to " + proto.ControlPrefix + "ID\n" +
					"and reports the replica's answer.\n\n" + exitStatusHelp,
				Flags: connFlags(adminTimeout(), &cli.BoolFlag{Name: "now", Usage: "stop at once (IMMED)"}),
				Action: func(c *cli.Context) error {
					if c.Bool("now") {
						return control(c, "stop", true, "stopping")
					}
					return control(c, "stop", false, "quiescing")
				},
			},
			{
				Name:        "quiesce",
				Usage:       "same as stop without --now",
				ArgsUsage:   "ID",
				Description: "Sends QUIESCE to " + proto.ControlPrefix + "ID.\n\n" + exitStatusHelp,
				Flags:       connFlags(adminTimeout()),
				Action:      func(c *cli.Context) error { return control(c, "quiesce", false, "quiescing") },
			},
			{
				Name:        "logs",
				Usage:       "print a replica's log (running or exited), fetched over NATS from its host",
				ArgsUsage:   "ID",
				Description: "Asks the attach manager that started it on " + proto.AttachLogsPrefix + "HOST.\n\n" + exitStatusHelp,
				Flags:       connFlags(append([]cli.Flag{adminTimeout()}, logFlags()...)...),
				Action:      replicaLogs,
			},
		},
	}
}

// control stops the replica named by the one argument: QUIESCE, or
// IMMED with now.
func control(c *cli.Context, name string, now bool, doing string) error {
	id, err := oneArg(c, "ID")
	if err != nil {
		return err
	}
	if err := proto.ValidID(id); err != nil { // arguments are checked before anything is done
		return fmt.Errorf("replica %q: %v", id, err)
	}
	nc, err := connect(c, "muster replica "+name, auth.RoleAdmin)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	if err := adminops.StopReplica(ctx, nc, id, now); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.App.Writer, "replica "+id+" "+doing)
	return err
}
