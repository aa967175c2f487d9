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

// serviceCommand is `muster service ls|reset`.
func serviceCommand() *cli.Command {
	return &cli.Command{
		Name:  "service",
		Usage: "inspect services, and reset failing ones",
		Subcommands: []*cli.Command{{
			Name:  "ls",
			Usage: "list the services the broker knows, with its figures",
			Description: "Asks a broker for its figures (" + proto.BrokerStatsSubject + ").\n" +
				"--json prints the broker's answer: {\"broker\":ID,\"services\":[...]}.\n\n" + exitStatusHelp,
			Flags:  connFlags(jsonFlag(), adminTimeout()),
			Action: runServiceLs,
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
		}},
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

func runServiceLs(c *cli.Context) error {
	nc, err := connect(c, "muster service ls", auth.RoleAdmin)
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
	nc, err := connect(c, "muster replica ls", auth.RoleAdmin)
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
			nc, err := connect(c, "muster replica "+name, auth.RoleAdmin)
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
