package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/adminops"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/picture"
)

// statusCommand is `muster status`: one screen of the whole system.
func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "one screen: hosts, services, what waits and what fails",
		Description: "Reads the picture of the system from NATS (every broker, host and replica).\n" +
			"--json prints the whole picture: {\"at\",\"brokers\",\"hosts\",\"services\",\"replicas\",\"problems\"}.\n\n" + exitStatusHelp,
		Flags: connFlags(jsonFlag(), adminTimeout()),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			p, err := gather(c, "muster status")
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, p)
			}
			return printStatus(c, p)
		},
	}
}

func printStatus(c *cli.Context, p *picture.Picture) error {
	w := c.App.Writer
	online, users, allowed, reps := 0, 0, 0, 0
	for _, h := range p.Hosts {
		if h.Online {
			online++
			users += h.Users
			allowed += h.MaxUsers
			reps += h.Replicas
		}
	}
	fmt.Fprintf(w, "brokers: %d   hosts: %d online of %d registered   replicas: %d   users: %d of %d allowed\n",
		len(p.Brokers), online, len(p.Hosts), len(p.Replicas), users, allowed)
	var lines []string
	for _, h := range p.Hosts {
		switch h.Status {
		case "offline":
			lines = append(lines, fmt.Sprintf("host %s offline (last heard %s ago)", h.ID, time.Duration(h.AgeMS)*time.Millisecond/time.Second*time.Second))
		case "isolated":
			lines = append(lines, fmt.Sprintf("host %s isolated: starts no replicas (muster host restore %s)", h.ID, h.ID))
		}
	}
	for _, s := range p.Services {
		if s.Pending > 0 {
			lines = append(lines, fmt.Sprintf("%s: %d waiting, %d replicas, %d of %d busy", s.Service, s.Pending, s.Replicas, s.Active, s.Capacity))
		}
		for host, why := range s.Failing {
			lines = append(lines, fmt.Sprintf("%s failing on %s: %s (muster service reset %s)", s.Service, host, why, s.Service))
		}
		if len(s.Hosts) == 0 && s.Replicas == 0 {
			lines = append(lines, fmt.Sprintf("%s: no online host can start it", s.Service))
		}
	}
	if len(lines) == 0 {
		fmt.Fprintln(w, "nothing waits, nothing fails")
	} else {
		fmt.Fprintln(w, "attention:")
		for _, l := range lines {
			fmt.Fprintln(w, "  "+l)
		}
	}
	fmt.Fprintln(w)
	if err := printServices(w, p.Services); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return printHosts(w, p.Hosts, time.UnixMilli(p.At))
}

// noArgs refuses positional arguments.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", c.Command.FullName(), c.Args().First())
	}
	return nil
}

// oneArg returns the single positional argument, named what.
func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%s: want %s", c.Command.FullName(), what)
	}
	return c.Args().First(), nil
}

// filterServices keeps the services matching --service and --host.
func filterServices(c *cli.Context, in []picture.Service) []picture.Service {
	out := []picture.Service{}
	for _, s := range in {
		if f := c.String("service"); f != "" && s.Service != f {
			continue
		}
		if f := c.String("host"); f != "" && !contains(s.Hosts, f) {
			continue
		}
		out = append(out, s)
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func runServiceLs(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	p, err := gather(c, "muster service ls")
	if err != nil {
		return err
	}
	svcs := filterServices(c, p.Services)
	if err := sortRows(svcs, c.String("sort")); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, struct {
			Services []picture.Service `json:"services"`
		}{svcs})
	}
	return printServices(c.App.Writer, svcs)
}

func printServices(w interface{ Write([]byte) (int, error) }, svcs []picture.Service) error {
	rows := make([][]string, 0, len(svcs))
	for _, s := range svcs {
		failing := "-"
		if len(s.Failing) > 0 {
			failing = fmt.Sprintf("on %d host(s)", len(s.Failing))
		}
		rows = append(rows, []string{s.Service, itoa(s.Replicas), fmt.Sprintf("%d/%d", s.Active, s.Capacity), itoa(s.Pending),
			itoa(s.Requests), itoa(s.Warm), itoa(s.Queued), itoa(s.ServerOccupied), fmt.Sprintf("%d/%d", s.ActiveHigh, s.PendingHigh),
			strings.Join(orDash(s.Hosts), ","), orDash([]string{s.Placement})[0], failing})
	}
	return table(w, "SERVICE\tREPLICAS\tACTIVE/CAP\tPENDING\tREQUESTS\tWARM\tQUEUED\tOCCUPIED\tHIGH(ACT/PEND)\tHOSTS\tPLACEMENT\tFAILING", rows)
}

func orDash(ss []string) []string {
	if len(ss) == 0 {
		return []string{"-"}
	}
	return ss
}

func runServiceShow(c *cli.Context) error {
	name, err := oneArg(c, "SERVICE")
	if err != nil {
		return err
	}
	svc, err := proto.ParseService(name)
	if err != nil {
		return err
	}
	p, err := gather(c, "muster service show")
	if err != nil {
		return err
	}
	var found *picture.Service
	for i := range p.Services {
		if p.Services[i].Service == svc.String() {
			found = &p.Services[i]
		}
	}
	if found == nil {
		return fmt.Errorf("service %s not found: no broker, host or replica knows it (muster service ls lists those that are)", svc)
	}
	reps := []picture.Replica{}
	for _, r := range p.Replicas {
		if r.Service == found.Service {
			reps = append(reps, r)
		}
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, struct {
			picture.Service
			ReplicaList []picture.Replica `json:"replica_list"`
		}{*found, reps})
	}
	w := c.App.Writer
	s := found
	avg := "-"
	if s.Events > 0 {
		avg = (time.Duration(s.ProcessingNS / s.Events)).String()
	}
	fmt.Fprintf(w, "service %s\n", s.Service)
	fmt.Fprintf(w, "  replicas %d (quiescing %d), standby %d, capacity %d, active %d (high %d), pending %d (high %d), missing %d\n",
		s.Replicas, s.Quiescing, s.Standby, s.Capacity, s.Active, s.ActiveHigh, s.Pending, s.PendingHigh, s.Missing)
	fmt.Fprintf(w, "  requests %d (warm %d, queued %d), server occupied %d, failed %d, notifications %d\n",
		s.Requests, s.Warm, s.Queued, s.ServerOccupied, s.Failed, s.Notifications)
	fmt.Fprintf(w, "  events %d, errors %d, bytes in %s, out %s, processing per event %s\n",
		s.Events, s.Errors, bytesStr(float64(s.BytesIn)), bytesStr(float64(s.BytesOut)), avg)
	fmt.Fprintf(w, "  hosts able to start it: %s; placement: %s\n", strings.Join(orDash(s.Hosts), ", "), orDash([]string{s.Placement})[0])
	for host, why := range s.Failing {
		fmt.Fprintf(w, "  FAILING on %s: %s\n", host, why)
	}
	if len(reps) > 0 {
		fmt.Fprintln(w)
		if err := printReplicas(w, reps, time.UnixMilli(p.At)); err != nil {
			return err
		}
		fmt.Fprintln(w, "\nwhy each replica runs where it does:")
		for _, r := range reps {
			fmt.Fprintf(w, "  %s on %s: %s\n", r.ID, orDash([]string{r.Attach})[0], orDash([]string{r.Placement})[0])
		}
	}
	return nil
}

// hostCommand is `muster host ls|show|isolate|restore|logs`.
func hostCommand() *cli.Command {
	return &cli.Command{
		Name:  "host",
		Usage: "inspect hosts (attach managers), isolate them for maintenance, read their logs; the host pool",
		Subcommands: append([]*cli.Command{{
			Name:  "ls",
			Usage: "list the hosts: status, version, load, users, traffic",
			Description: "Every attach manager's registration, online or not (offline: no heartbeat for three\n" +
				"intervals). --json prints {\"hosts\":[...]} (docs/OPERATIONS.md \"Figures\").\n\n" + exitStatusHelp,
			Flags: listFlags(),
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				p, err := gather(c, "muster host ls")
				if err != nil {
					return err
				}
				hosts := []picture.Host{}
				for _, h := range p.Hosts {
					if (c.String("host") == "" || h.ID == c.String("host")) && (c.String("service") == "" || h.Offers(c.String("service"))) {
						hosts = append(hosts, h)
					}
				}
				if err := sortRows(hosts, c.String("sort")); err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, struct {
						Hosts []picture.Host `json:"hosts"`
					}{hosts})
				}
				return printHosts(c.App.Writer, hosts, time.UnixMilli(p.At))
			},
		}, {
			Name:        "show",
			Usage:       "one host in detail, with its replicas",
			ArgsUsage:   "HOST",
			Description: "--json prints the host's figures and its replicas.\n\n" + exitStatusHelp,
			Flags:       connFlags(jsonFlag(), adminTimeout()),
			Action:      runHostShow,
		},
			hostControlCommand("isolate", proto.OpIsolate, "isolated: it starts no replicas; running ones quiesce",
				"isolate a host for maintenance: it starts no new replicas, its running replicas finish their conversations and exit"),
			hostControlCommand("restore", proto.OpRestore, "restored: it starts replicas again",
				"end a host's isolation"),
			{
				Name:      "logs",
				Usage:     "print a host's attach manager log, fetched over NATS",
				ArgsUsage: "HOST",
				Description: "Asks the attach manager on " + proto.AttachLogsPrefix + "HOST; works from any host that reaches NATS.\n\n" +
					exitStatusHelp,
				Flags: connFlags(append([]cli.Flag{adminTimeout()}, logFlags()...)...),
				Action: func(c *cli.Context) error {
					host, err := oneArg(c, "HOST")
					if err != nil {
						return err
					}
					return fetchLog(c, host, "")
				},
			}}, poolCommands()...),
	}
}

func printHosts(w interface{ Write([]byte) (int, error) }, hosts []picture.Host, now time.Time) error {
	configured, online := 0, 0
	for _, h := range hosts {
		if h.Configured {
			configured++
		}
		if h.Online {
			online++
		}
	}
	fmt.Fprintf(w, "%d configured, %d online\n", configured, online)
	rows := make([][]string, 0, len(hosts))
	for _, h := range hosts {
		if !h.Online && h.Updated == 0 { // configured, never registered (or long gone)
			rows = append(rows, []string{h.ID, h.Status, "-", "-", "-", "-", "-", "-", "-", "-", "never", "-"})
			continue
		}
		rows = append(rows, []string{h.ID, h.Status, h.Version, fmt.Sprintf("%d/%d", h.Replicas, h.MaxReplicas),
			fmt.Sprintf("%d/%d", h.Users, h.MaxUsers), fmt.Sprintf("%.0f%%", h.CPUPercent), fmt.Sprintf("%.2f", h.Load1),
			bytesStr(float64(h.MemFree)), fmt.Sprintf("%.1f", h.EventsPerSec), bytesStr(h.BytesPerSec) + "/s",
			ago(now, h.Updated), strings.Join(h.Services, ",")})
	}
	return table(w, "HOST\tSTATUS\tVERSION\tREPLICAS\tUSERS\tCPU\tLOAD\tMEMFREE\tEVENTS/S\tBANDWIDTH\tHEARD\tSERVICES", rows)
}

func runHostShow(c *cli.Context) error {
	id, err := oneArg(c, "HOST")
	if err != nil {
		return err
	}
	p, err := gather(c, "muster host show")
	if err != nil {
		return err
	}
	var h *picture.Host
	for i := range p.Hosts {
		if p.Hosts[i].ID == id {
			h = &p.Hosts[i]
		}
	}
	if h == nil {
		return fmt.Errorf("host %s not found: no attach manager registered with that id (muster host ls lists them)", id)
	}
	reps := []picture.Replica{}
	for _, r := range p.Replicas {
		if r.Attach == id {
			reps = append(reps, r)
		}
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, struct {
			picture.Host
			ReplicaList []picture.Replica `json:"replica_list"`
		}{*h, reps})
	}
	w := c.App.Writer
	now := time.UnixMilli(p.At)
	fmt.Fprintf(w, "host %s (%s), %s, version %s, up since %s, last heard %s ago\n", h.ID, h.Host, h.Status, h.Version,
		time.UnixMilli(h.Started).Format(time.RFC3339), ago(now, h.Updated))
	fmt.Fprintf(w, "  replicas %d of %d (starting %d), users %d of %d allowed\n", h.Replicas, h.MaxReplicas, h.Starting, h.Users, h.MaxUsers)
	fmt.Fprintf(w, "  cpu %.0f%%, load %.2f, memory free %s of %s, %.1f events/s, %s/s\n", h.CPUPercent, h.Load1,
		bytesStr(float64(h.MemFree)), bytesStr(float64(h.MemTotal)), h.EventsPerSec, bytesStr(h.BytesPerSec))
	fmt.Fprintf(w, "  services it can start: %s\n", strings.Join(orDash(h.Services), ", "))
	for svc, why := range h.Failing {
		fmt.Fprintf(w, "  FAILING %s: %s\n", svc, why)
	}
	fmt.Fprintf(w, "  logs: %s (own), %s (replicas) — muster host logs %s, muster replica logs ID\n", h.LogFile, h.LogDir, h.ID)
	if len(reps) > 0 {
		fmt.Fprintln(w)
		return printReplicas(w, reps, now)
	}
	return nil
}

// hostControlCommand is `muster host isolate|restore HOST`.
func hostControlCommand(name, op, done, usage string) *cli.Command {
	return &cli.Command{
		Name:        name,
		Usage:       usage,
		ArgsUsage:   "HOST",
		Description: "Sends " + op + " to " + proto.AttachControlPrefix + "HOST; the host keeps the state across restarts.\n\n" + exitStatusHelp,
		Flags:       connFlags(jsonFlag(), adminTimeout()),
		Action: func(c *cli.Context) error {
			id, err := oneArg(c, "HOST")
			if err != nil {
				return err
			}
			ai, err := hostControlInfo(c, id, op)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, ai)
			}
			_, err = fmt.Fprintf(c.App.Writer, "host %s %s\n", id, done)
			return err
		},
	}
}

// logFlags are --follow and --tail of the log commands.
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing what is appended, until Ctrl-C"},
		&cli.Int64Flag{Name: "tail", Value: 64 << 10, Usage: "start this many `BYTES` before the end (0: from the start)"},
	}
}

// fetchLog prints a log from host (replica "" = the manager's own),
// following it with --follow.
func fetchLog(c *cli.Context, host, replica string) error {
	if err := proto.ValidID(host); err != nil { // arguments are checked before anything is done
		return fmt.Errorf("host %q: %v", host, err)
	}
	nc, err := connect(c, "muster logs", auth.RoleAdmin)
	if err != nil {
		return err
	}
	defer nc.Close()
	offset := int64(0)
	if t := c.Int64("tail"); t > 0 {
		offset = -t
	}
	for {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		chunk, err := adminops.ReadLog(ctx, nc, host, replica, offset, 0)
		cancel()
		switch {
		case c.Context.Err() != nil && err != nil:
			return nil // Ctrl-C while following
		case err != nil:
			return err
		}
		if _, err := c.App.Writer.Write(chunk.Data); err != nil {
			return err
		}
		if offset = chunk.End(); offset < chunk.Size {
			continue // more than one message's worth
		}
		if !c.Bool("follow") {
			return nil
		}
		select {
		case <-c.Context.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func runReplicaLs(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	p, err := gather(c, "muster replica ls")
	if err != nil {
		return err
	}
	reps := filterReplicas(c, p.Replicas)
	if err := sortRows(reps, c.String("sort")); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, struct {
			Replicas []picture.Replica `json:"replicas"`
		}{reps})
	}
	return printReplicas(c.App.Writer, reps, time.UnixMilli(p.At))
}

func filterReplicas(c *cli.Context, in []picture.Replica) []picture.Replica {
	out := []picture.Replica{}
	for _, r := range in {
		if (c.String("host") == "" || r.Attach == c.String("host")) && (c.String("service") == "" || r.Service == c.String("service")) {
			out = append(out, r)
		}
	}
	return out
}

func printReplicas(w interface{ Write([]byte) (int, error) }, reps []picture.Replica, now time.Time) error {
	rows := make([][]string, 0, len(reps))
	for _, r := range reps {
		avg := "-"
		if r.Stats.Messages > 0 {
			avg = (time.Duration(r.Stats.ProcessingNS / r.Stats.Messages)).Round(time.Microsecond).String()
		}
		clients := map[string]bool{}
		var names []string
		for _, cv := range r.Convs {
			if !clients[cv.Client] {
				clients[cv.Client] = true
				names = append(names, cv.Client)
			}
		}
		host := r.Attach
		if host == "" {
			host = r.Host
		}
		rows = append(rows, []string{r.ID, r.Service, host, itoa(r.PID), stateOf(r.ReplicaInfo), fmt.Sprintf("%d/%d", r.Active, r.Capacity),
			itoa(r.Stats.Messages), bytesStr(float64(r.Stats.BytesIn)) + "/" + bytesStr(float64(r.Stats.BytesOut)), avg,
			fmt.Sprintf("%.0f%%", r.CPUPercent), bytesStr(float64(r.RSS)), ago(now, r.Started), ago(now, r.LastActive),
			strings.Join(orDash(names), ",")})
	}
	return table(w, "ID\tSERVICE\tHOST\tPID\tSTATE\tACTIVE\tEVENTS\tIN/OUT\tAVG\tCPU\tRSS\tUP\tLAST\tCLIENTS", rows)
}

// stateOf is a replica's state for operators: a standby its manager armed
// (it takes the warm subject too) says so.
func stateOf(r proto.ReplicaInfo) string {
	if r.State == proto.StateStandby && r.Arm == proto.ArmOn {
		return r.State + " (armed)"
	}
	return r.State
}

func runReplicaShow(c *cli.Context) error {
	id, err := oneArg(c, "ID")
	if err != nil {
		return err
	}
	p, err := gather(c, "muster replica show")
	if err != nil {
		return err
	}
	for _, r := range p.Replicas {
		if r.ID != id {
			continue
		}
		if c.Bool("json") {
			return writeJSON(c.App.Writer, r)
		}
		w := c.App.Writer
		now := time.UnixMilli(p.At)
		fmt.Fprintf(w, "replica %s of %s, %s, pid %d on %s (host %s), version %s\n", r.ID, r.Service, stateOf(r.ReplicaInfo), r.PID, r.Host, orDash([]string{r.Attach})[0], r.Version)
		fmt.Fprintf(w, "  up %s, last active %s ago, heard %s ago\n", ago(now, r.Started), ago(now, r.LastActive), ago(now, r.Updated))
		fmt.Fprintf(w, "  active %d of %d, requests %d (warm %d, queued %d), events %d, errors %d\n", r.Active, r.Capacity,
			r.Stats.Conversations, r.Stats.Warm(), r.Stats.Queued, r.Stats.Messages, r.Stats.Errors)
		if n := r.Stats.Messages; n > 0 {
			fmt.Fprintf(w, "  bytes in %s (%s/event), out %s (%s/event), processing %s (%s/event)\n",
				bytesStr(float64(r.Stats.BytesIn)), bytesStr(float64(r.Stats.BytesIn)/float64(n)),
				bytesStr(float64(r.Stats.BytesOut)), bytesStr(float64(r.Stats.BytesOut)/float64(n)),
				time.Duration(r.Stats.ProcessingNS), time.Duration(r.Stats.ProcessingNS/n))
		}
		fmt.Fprintf(w, "  cpu %.0f%%, memory %s\n", r.CPUPercent, bytesStr(float64(r.RSS)))
		for _, cv := range r.Convs {
			kind := "conversation"
			if cv.Call {
				kind = "call"
			}
			fmt.Fprintf(w, "  %s from %s, %d message(s), since %s ago\n", kind, cv.Client, cv.Messages, ago(now, cv.Started))
		}
		return nil
	}
	return fmt.Errorf("replica %s not found: no live registration with that id (muster replica ls lists them)", id)
}

// replicaLogs is `muster replica logs ID`: asks the host that started it
// (from its registration), else every online host.
func replicaLogs(c *cli.Context) error {
	id, err := oneArg(c, "ID")
	if err != nil {
		return err
	}
	if err := proto.ValidID(id); err != nil {
		return fmt.Errorf("replica %q: %v", id, err)
	}
	p, err := gather(c, "muster replica logs")
	if err != nil {
		return err
	}
	var hosts []string
	for _, r := range p.Replicas {
		if r.ID == id && r.Attach != "" {
			hosts = append(hosts, r.Attach)
		}
	}
	if len(hosts) == 0 { // exited, or started by hand: ask every online host
		for _, h := range p.Hosts {
			if h.Online {
				hosts = append(hosts, h.ID)
			}
		}
	}
	for _, h := range hosts {
		err := fetchLog(c, h, id)
		if errors.Is(err, adminops.ErrNotFound) {
			continue
		}
		return err
	}
	return fmt.Errorf("replica %s not found: no online host has its log (it was not started by an attach manager, or its log was removed)", id)
}

// convCommand is `muster conv ls`.
func convCommand() *cli.Command {
	return &cli.Command{
		Name:  "conv",
		Usage: "inspect open calls and conversations",
		Subcommands: []*cli.Command{{
			Name:  "ls",
			Usage: "list open calls and conversations: replica, client, since when",
			Description: "From the replicas' registrations (fresh within a quarter second of a change).\n" +
				"--json prints {\"convs\":[...]}.\n\n" + exitStatusHelp,
			Flags: listFlags(),
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				p, err := gather(c, "muster conv ls")
				if err != nil {
					return err
				}
				type row struct {
					Replica string `json:"replica"`
					Service string `json:"service"`
					Host    string `json:"host"`
					proto.ConvInfo
				}
				rows := []row{}
				for _, r := range filterReplicas(c, p.Replicas) {
					for _, cv := range r.Convs {
						rows = append(rows, row{Replica: r.ID, Service: r.Service, Host: r.Attach, ConvInfo: cv})
					}
				}
				if err := sortRows(rows, c.String("sort")); err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, struct {
						Convs []row `json:"convs"`
					}{rows})
				}
				now := time.UnixMilli(p.At)
				t := make([][]string, 0, len(rows))
				for _, r := range rows {
					kind := "conversation"
					if r.Call {
						kind = "call"
					}
					if r.Queued {
						kind += " (queued)"
					}
					t = append(t, []string{r.Replica, r.Service, orDash([]string{r.Host})[0], r.Client, kind, ago(now, r.Started), itoa(r.Messages)})
				}
				return table(c.App.Writer, "REPLICA\tSERVICE\tHOST\tCLIENT\tKIND\tSINCE\tMESSAGES", t)
			},
		}},
	}
}

// hostControl isolates (op ISOLATE) or restores (RESTORE) host id.
func hostControl(c *cli.Context, id, op string) error {
	_, err := hostControlInfo(c, id, op)
	return err
}

// hostControlInfo is hostControl returning the host's registration after
// the change.
func hostControlInfo(c *cli.Context, id, op string) (proto.AttachInfo, error) {
	if err := proto.ValidID(id); err != nil { // arguments are checked before anything is done
		return proto.AttachInfo{}, fmt.Errorf("host %q: %v", id, err)
	}
	nc, err := connect(c, "muster host "+strings.ToLower(op), auth.RoleAdmin)
	if err != nil {
		return proto.AttachInfo{}, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	return adminops.SetIsolation(ctx, nc, id, op == proto.OpIsolate)
}
