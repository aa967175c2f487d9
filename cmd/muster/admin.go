package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// resetResult is the --json output of service reset.
type resetResult struct {
	Service string              `json:"service"`
	Reset   []proto.AttachReset `json:"reset"`
}

func runServiceReset(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("service reset: want SERVICE")
	}
	svc, err := proto.ParseService(c.Args().First())
	if err != nil {
		return err
	}
	nc, err := connect(c, "muster service reset", auth.RoleAdmin)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	want, err := offeringManagers(ctx, nc, svc.String(), time.Now())
	if err != nil {
		return err
	}
	if want == 0 {
		return fmt.Errorf("no live attach manager offers %s", svc)
	}
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, want)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(proto.AttachResetSubject(svc), inbox, nil); err != nil {
		return err
	}
	res := resetResult{Service: svc.String(), Reset: []proto.AttachReset{}}
	for len(res.Reset) < want {
		select {
		case m := <-replies:
			var r proto.AttachReset
			if err := json.Unmarshal(m.Data, &r); err != nil {
				return fmt.Errorf("attach manager answered: %w", err)
			}
			res.Reset = append(res.Reset, r)
		case <-ctx.Done():
			if len(res.Reset) == 0 {
				return fmt.Errorf("service reset %s: no attach manager answered within %v (%d offer it)", svc, c.Duration("timeout"), want)
			}
			fmt.Fprintf(c.App.ErrWriter, "muster: %d of %d attach managers offering %s answered\n", len(res.Reset), want, svc)
			want = len(res.Reset)
		}
	}
	sort.Slice(res.Reset, func(i, j int) bool { return res.Reset[i].Attach < res.Reset[j].Attach })
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

// offeringManagers counts the live attach managers whose registration
// offers svc.
func offeringManagers(ctx context.Context, nc *nats.Conn, svc string, now time.Time) (int, error) {
	ams, err := liveAttachManagers(ctx, nc, now)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range ams {
		if a.Offers(svc) {
			n++
		}
	}
	return n, nil
}

// liveAttachManagers reads the attach managers' registrations not expired
// at now, sorted by id. No bucket means no attach manager ever registered.
func liveAttachManagers(ctx context.Context, nc *nats.Conn, now time.Time) ([]proto.AttachInfo, error) {
	out := []proto.AttachInfo{}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, proto.AttachBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", proto.AttachBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", proto.AttachBucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // all current records seen
				sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
				return out, nil
			}
			if ai, err := proto.DecodeAttachInfo(e.Value()); err == nil && !ai.Expired(now) {
				out = append(out, ai)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("read bucket %s: %w", proto.AttachBucket, ctx.Err())
		}
	}
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
