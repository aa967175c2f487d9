package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
)

// adminTimeout is --timeout of the admin commands.
func adminTimeout() cli.Flag {
	return &cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "give up after this long"}
}

// jsonFlag is --json of the listings.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON (stable field names) instead of a table"}
}

// serviceCommand is `muster service ls`.
func serviceCommand() *cli.Command {
	return &cli.Command{
		Name:  "service",
		Usage: "inspect services",
		Subcommands: []*cli.Command{{
			Name:  "ls",
			Usage: "list the services the broker knows, with its figures",
			Description: "Asks a broker for its figures (" + proto.BrokerStatsSubject + ").\n" +
				"--json prints the broker's answer: {\"broker\":ID,\"services\":[...]}.\n\n" + exitStatusHelp,
			Flags:  connFlags(jsonFlag(), adminTimeout()),
			Action: runServiceLs,
		}},
	}
}

func runServiceLs(c *cli.Context) error {
	nc, err := connect(c, "muster service ls")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	r, err := nc.RequestWithContext(ctx, proto.BrokerStatsSubject, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return errors.New("no broker running (start one with `muster up` or `muster broker`)")
	}
	if err != nil {
		return fmt.Errorf("ask the broker: %w", err)
	}
	if e := proto.ErrorFromHeader(r.Header); e != nil {
		return e
	}
	var st proto.BrokerStats
	if err := json.Unmarshal(r.Data, &st); err != nil {
		return fmt.Errorf("broker answered: %w", err)
	}
	if st.Services == nil {
		st.Services = []proto.ServiceStats{}
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, st)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tREPLICAS\tACTIVE\tPENDING\tTOTAL\tOCCUPIED\tNOTIFIED")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", s.Service, s.Replicas, s.Active, s.Pending, s.TotalRequests, s.ServerOccupied, s.Notifications)
	}
	return tw.Flush()
}

// replicaCommand is `muster replica ls|quiesce|stop`.
func replicaCommand() *cli.Command {
	return &cli.Command{
		Name:  "replica",
		Usage: "inspect and stop replicas",
		Subcommands: []*cli.Command{
			{
				Name:  "ls",
				Usage: "list live replicas",
				Description: "Reads the registrations in the " + proto.ReplicaBucket + " bucket, skipping expired ones.\n" +
					"--json prints {\"replicas\":[...]}, each a registration record.\n\n" + exitStatusHelp,
				Flags:  connFlags(jsonFlag(), adminTimeout()),
				Action: runReplicaLs,
			},
			controlCommand("quiesce", proto.OpQuiesce, "quiescing",
				"stop a replica gracefully: it takes no new work, open conversations finish (within its grace period)"),
			controlCommand("stop", proto.OpImmed, "stopping",
				"stop a replica now: open conversations end with 0003/0010"),
		},
	}
}

// replicaList is the --json output of replica ls.
type replicaList struct {
	Replicas []proto.ReplicaInfo `json:"replicas"`
}

func runReplicaLs(c *cli.Context) error {
	nc, err := connect(c, "muster replica ls")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	reps, err := liveReplicas(ctx, nc, time.Now())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, replicaList{Replicas: reps})
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSERVICE\tHOST\tPID\tSTATE\tACTIVE/CAP\tCONVS\tMSGS")
	for _, r := range reps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d/%d\t%d\t%d\n", r.ID, r.Service, r.Host, r.PID, r.State, r.Active, r.Capacity, r.Stats.Conversations, r.Stats.Messages)
	}
	return tw.Flush()
}

// liveReplicas reads the registrations not expired at now, sorted by
// service and id. No bucket means no replica ever registered.
func liveReplicas(ctx context.Context, nc *nats.Conn, now time.Time) ([]proto.ReplicaInfo, error) {
	out := []proto.ReplicaInfo{}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, proto.ReplicaBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", proto.ReplicaBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", proto.ReplicaBucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // all current records seen
				sort.Slice(out, func(i, j int) bool {
					if out[i].Service != out[j].Service {
						return out[i].Service < out[j].Service
					}
					return out[i].ID < out[j].ID
				})
				return out, nil
			}
			ri, err := proto.DecodeReplicaInfo(e.Value())
			if err != nil || ri.Expired(now) {
				continue // a bad record is the registry's problem, not the listing's
			}
			out = append(out, ri)
		case <-ctx.Done():
			return nil, fmt.Errorf("read bucket %s: %w", proto.ReplicaBucket, ctx.Err())
		}
	}
}

// controlCommand is `muster replica quiesce|stop ID`: op to the replica's
// control subject.
func controlCommand(name, op, doing, usage string) *cli.Command {
	return &cli.Command{
		Name:        name,
		Usage:       usage,
		ArgsUsage:   "ID",
		Description: "Sends " + op + " to " + proto.ControlPrefix + "ID and reports the replica's answer.\n\n" + exitStatusHelp,
		Flags:       connFlags(adminTimeout()),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("replica %s: want ID", name)
			}
			id := c.Args().First()
			if err := proto.ValidID(id); err != nil {
				return err
			}
			nc, err := connect(c, "muster replica "+name)
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			m := nats.NewMsg(proto.ControlSubject(id))
			m.Header.Set(proto.HdrOp, op)
			r, err := nc.RequestMsgWithContext(ctx, m)
			if errors.Is(err, nats.ErrNoResponders) {
				return fmt.Errorf("replica %s not found", id)
			}
			if err != nil {
				return fmt.Errorf("replica %s: %w", id, err)
			}
			if e := proto.ErrorFromHeader(r.Header); e != nil {
				return e
			}
			_, err = fmt.Fprintln(c.App.Writer, "replica "+id+" "+doing)
			return err
		},
	}
}
