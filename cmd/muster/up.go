package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/health"
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
		Description: "Starts an embedded NATS server (or uses --server), a broker and an attach\n" +
			"manager that starts replicas on demand: of the demo services (served by this\n" +
			"binary, `muster example echo|sleep`), or of the services in --config FILE.\n" +
			"MUSTER_URL is ignored (with a notice): up runs its own server unless --server says otherwise.\n" +
			"Prints on stderr where its data, state, logs and credentials are.\n" +
			"With --cluster-listen and --routes its NATS server is a node of a NATS cluster (see muster nats):\n" +
			"it waits (--cluster-wait) until the cluster has JetStream before the broker starts.\n" +
			"Runs until SIGINT, SIGTERM or SIGHUP, then stops the replicas (after the config's grace),\n" +
			"the broker and NATS; a second signal stops at once, killing the replicas.\n\n" + exitStatusHelp,
		Flags: append(append(upNATSFlags(), nodeFlags()...),
			clusterWaitFlag(),
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "attach config `FILE` instead of the built-in demo config"},
			&cli.BoolFlag{Name: "demo", Value: true, Usage: "run an attach manager with the demo config when there is no --config (--demo=false: no attach manager)"},
			defaultTimeoutFlag(),
			placementFlag(),
			logLevelFlag(),
			httpFlag(defaultUpHTTP), pprofFlag(),
		),
		Action: runUp,
	}
}

// upNATSFlags are natsFlags without MUSTER_URL for --server: a MUSTER_URL
// set for the clients must not silently turn `muster up` into a client of
// another server.
func upNATSFlags() []cli.Flag {
	flags := natsFlags()
	for _, f := range flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == FlagServer {
			sf.EnvVars = nil
			sf.Usage = "use this NATS server instead of starting one (" + proto.EnvURL + " is ignored)"
		}
	}
	return flags
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

// errStoppedNow is up's error after a second stop signal.
var errStoppedNow = errors.New("up: stopped at once on a second signal; replicas were killed, not drained")

func runUp(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if os.Getenv(proto.EnvURL) != "" && !c.IsSet(FlagServer) {
		fmt.Fprintf(c.App.ErrWriter, "muster up: ignoring %s: up runs its own NATS server (give --server to use another)\n", proto.EnvURL)
	}
	// A bad config or flag fails here, before anything starts.
	bcfg, err := brokerConfig(c, log)
	if err != nil {
		return err
	}
	var cfg *attach.Config
	if f := c.String("config"); f != "" {
		if cfg, err = attach.LoadConfig(f); err != nil {
			return err
		}
	}

	// The first stop signal (or the end of c.Context) ends ctx: up stops
	// gracefully. A second one ends now: what is still stopping is
	// killed.
	ctx, stopRun := context.WithCancel(c.Context)
	defer stopRun()
	now, stopNow := context.WithCancel(context.Background())
	defer stopNow()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	defer signal.Stop(sigs)
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		select {
		case <-sigs:
			stopRun()
		case <-ctx.Done():
		case <-returned:
			return
		}
		select {
		case <-sigs:
			stopNow()
		case <-returned:
		}
	}()

	var cleanup stack // replicas, broker, connection, NATS: the reverse of starting
	defer cleanup.run()

	n, err := upNATS(c, log, &cleanup)
	if err != nil {
		return err
	}
	connCfg, dataDir, credsDir := n.conn, n.dataDir, n.credsDir
	connCfg.Name = "muster up"
	brokerCfg := roleConn(connCfg, credsDir, auth.RoleBroker)
	nc, err := brokerCfg.Connect()
	if err != nil {
		return connectHint(err, auth.RoleBroker)
	}
	cleanup.push(nc.Close)
	fmt.Fprintf(c.App.ErrWriter, "muster up: NATS %s (%s)\n", nc.ConnectedUrlRedacted(), n.where)
	writeWhere(c.App.ErrWriter, "muster up", n.clusterLines())
	web, err := listenHTTP(c, log, "muster up")
	if err != nil {
		return err
	}
	cleanup.push(web.close)
	if n.clustered() {
		web.add([]health.Check{jetStreamCheck(n)}, nil)
	}
	if err := waitCluster(ctx, n, c.App.ErrWriter, "muster up", c.Duration("cluster-wait"), log); err != nil {
		return err
	}
	if err := waitJetStream(ctx, nc, c.App.ErrWriter, "muster up", c.Duration("cluster-wait")); err != nil {
		return err
	}
	panelURL, err := upPanel(c, web, connCfg, credsDir, nc, log, &cleanup)
	if err != nil {
		return err
	}

	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	b, err := broker.Start(sctx, nc, bcfg)
	if err != nil {
		return err
	}
	cleanup.push(func() {
		bounded(log, "broker shutdown", stopTimeout, func() {
			sctx, cancel := context.WithTimeout(now, stopTimeout)
			defer cancel()
			_ = b.Shutdown(sctx)
		})
	})
	fmt.Fprintf(c.App.ErrWriter, "muster up: broker %s\n", b.ID())
	web.add(b.HealthChecks(), b.Collector())

	switch {
	case cfg != nil:
		cfg.UseDataDir(dataDir) // one instance, one state: beside its NATS data
	case c.Bool("demo"):
		if cfg, err = demoConfig(n.cfg.ServerName, dataDir); err != nil {
			return err
		}
	}
	var names []string
	if cfg != nil {
		anc := nc // one connection, unless each role has its own credentials
		var signer *auth.ReplicaSigner
		if credsDir != "" {
			// The attach manager's user is named after its id: it may
			// write its own registration record and no other manager's.
			ac, err := auth.UserCreds(n.keys, auth.RoleAttach, cfg.Host.Name)
			if err != nil {
				return err
			}
			attCfg := roleConn(connCfg, credsDir, auth.RoleAttach)
			if _, err := auth.WriteCredsFile(attCfg.CredsFile, ac); err != nil {
				return err
			}
			if anc, err = attCfg.Connect(); err != nil {
				return connectHint(err, auth.RoleAttach)
			}
			cleanup.push(anc.Close)
			// Each replica gets credentials for its own service only.
			acc, err := auth.AccountOfCreds(attCfg.CredsFile)
			if err != nil {
				return err
			}
			if signer, err = auth.LoadReplicaSigner(filepath.Join(n.keysDir, auth.ReplicaSignerFile), acc); err != nil {
				return err
			}
		}
		m, err := startAttach(sctx, anc, roleConn(connCfg, credsDir, auth.RoleReplica), signer, cfg, log)
		if err != nil {
			return err
		}
		cleanup.push(func() {
			bounded(log, "attach manager shutdown", cfg.Host.Grace+stopTimeout, func() { _ = m.Shutdown(now) })
		})
		web.add(m.HealthChecks(), m.Collector())
		for _, s := range cfg.Services {
			names = append(names, s.Service)
		}
		fmt.Fprintf(c.App.ErrWriter, "muster up: attach manager %s starts replicas on demand: %s\n", m.ID(), strings.Join(names, ", "))
	}
	writeWhere(c.App.ErrWriter, "muster up", upWhere(n, cfg))
	if panelURL != "" {
		fmt.Fprintf(c.App.ErrWriter, "muster up: control panel: %s\n", panelURL)
	}
	if len(names) > 0 {
		try := "muster call"
		if u := serverList(nc, n); u != natsconn.DefaultURL {
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
	if cfg != nil {
		fmt.Fprintf(c.App.ErrWriter, "muster up: stopping: waiting up to %v for replicas to finish; press Ctrl-C again to stop now\n", cfg.Host.StopWait())
	} else {
		fmt.Fprintf(c.App.ErrWriter, "muster up: stopping; press Ctrl-C again to stop now\n")
	}
	log.Info("shutting down")
	cleanup.run()
	if now.Err() != nil {
		return errStoppedNow
	}
	return nil
}

// upWhere lists where `muster up` keeps its files, as writeWhere prints
// them: NATS data, attach state, replica logs and credentials.
func upWhere(n *node, cfg *attach.Config) [][2]string {
	state, logs := "none (no attach manager)", "none (no attach manager)"
	if cfg != nil {
		state = cfg.Host.StateDir
		logs = cfg.Host.LogDir + " (replica output, and attach.log: the attach manager's own; up also logs to stderr)"
	}
	return [][2]string{
		{"data", dataWhere(n)},
		{"state", state},
		{"logs", logs},
		{"credentials", credsWhere(n)},
		// The HTTP endpoint's line ({"http", URL}) goes here.
	}
}

// dataWhere says where n keeps its JetStream store and signing keys.
func dataWhere(n *node) string {
	if n.dataDir == "" {
		return "none here (NATS runs elsewhere)"
	}
	data := n.dataDir + " (NATS JetStream store"
	switch {
	case n.keysDir == filepath.Join(n.dataDir, "keys"):
		data += "; signing keys in keys/"
	case n.keysDir != "":
		data += "; signing keys in " + n.keysDir + " (--keys)"
	}
	return data + ")"
}

// credsWhere says where n's .creds files are.
func credsWhere(n *node) string {
	switch {
	case n.credsDir != "":
		return filepath.Join(n.credsDir, "<role>.creds") + " (callers: " + string(auth.RoleClient) + ".creds, admin commands: " + string(auth.RoleAdmin) + ".creds)"
	case n.conn.CredsFile != "":
		return n.conn.CredsFile + " (--creds)"
	case n.dataDir == "":
		return "as given by the --server connection flags"
	}
	return "none (the server takes no credentials)"
}

// serverList is the --server value that reaches n: its URL, and in a
// cluster the other nodes' client URLs as nc learnt them, so a client
// survives the loss of any one node.
func serverList(nc *nats.Conn, n *node) string {
	if n.clustered() {
		// The other nodes' client URLs come with the server's INFO a moment
		// after their routes: wait a little for all of them.
		deadline := time.Now().Add(2 * time.Second)
		for len(nc.DiscoveredServers())+1 < len(n.status().Connected) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	urls := []string{nc.ConnectedUrlRedacted()}
	if n.clustered() {
		for _, u := range nc.DiscoveredServers() {
			if !slices.Contains(urls, u) {
				urls = append(urls, u)
			}
		}
	}
	return strings.Join(urls, ",")
}

// writeWhere prints one "who: what: where" line per entry, aligned.
func writeWhere(w io.Writer, who string, lines [][2]string) {
	width := 0
	for _, l := range lines {
		width = max(width, len(l[0]))
	}
	for _, l := range lines {
		fmt.Fprintf(w, "%s: %-*s %s\n", who, width+1, l[0]+":", l[1])
	}
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
