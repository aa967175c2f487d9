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
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
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
			"Runs until SIGINT, SIGTERM or SIGHUP, then stops the replicas (after the config's grace),\n" +
			"the broker and NATS; a second signal stops at once, killing the replicas.\n\n" + exitStatusHelp,
		Flags: append(upNATSFlags(),
			&cli.StringFlag{Name: "nats-listen", Value: "127.0.0.1:4222", Usage: "`HOST:PORT` the embedded NATS server listens on"},
			&cli.StringFlag{Name: "data", Usage: "`DIR` of the embedded server's JetStream store (default: $XDG_STATE_HOME/muster or ~/.local/state/muster)"},
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "attach config `FILE` instead of the built-in demo config"},
			&cli.BoolFlag{Name: "insecure", Usage: "run the embedded NATS server WITHOUT credentials: anyone who can reach it can serve, snoop on or stop Muster's work (default: credentials per role in DATA/creds, created on first start)"},
			&cli.BoolFlag{Name: "demo", Value: true, Usage: "run an attach manager with the demo config when there is no --config (--demo=false: no attach manager)"},
			defaultTimeoutFlag(),
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
	// A bad config fails here, before anything starts.
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

	connCfg, where, dataDir, credsDir, err := upNATS(c, log, &cleanup)
	if err != nil {
		return err
	}
	connCfg.Name = "muster up"
	brokerCfg := roleConn(connCfg, credsDir, auth.RoleBroker)
	nc, err := brokerCfg.Connect()
	if err != nil {
		return connectHint(err, auth.RoleBroker)
	}
	cleanup.push(nc.Close)
	fmt.Fprintf(c.App.ErrWriter, "muster up: NATS %s (%s)\n", nc.ConnectedUrlRedacted(), where)
	web, err := listenHTTP(c, log, "muster up")
	if err != nil {
		return err
	}
	cleanup.push(web.close)
	panelURL, err := upPanel(c, web, connCfg, credsDir, nc, log, &cleanup)
	if err != nil {
		return err
	}

	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	b, err := broker.Start(sctx, nc, broker.Config{DefaultTimeout: c.Duration("default-timeout"), Logger: log, Version: version})
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
		if cfg, err = demoConfig(dataDir); err != nil {
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
			k, err := auth.LoadOrCreateKeys(filepath.Join(dataDir, "keys"))
			if err != nil {
				return err
			}
			ac, err := auth.UserCreds(k, auth.RoleAttach, cfg.Host.Name)
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
			if signer, err = auth.LoadReplicaSigner(filepath.Join(dataDir, "keys", auth.ReplicaSignerFile), acc); err != nil {
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
	writeWhere(c.App.ErrWriter, upWhere(c, connCfg, dataDir, credsDir, cfg))
	if panelURL != "" {
		fmt.Fprintf(c.App.ErrWriter, "muster up: control panel: %s\n", panelURL)
	}
	if len(names) > 0 {
		try := "muster call"
		if u := nc.ConnectedUrlRedacted(); u != natsconn.DefaultURL {
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
func upWhere(c *cli.Context, connCfg natsconn.Config, dataDir, credsDir string, cfg *attach.Config) [][2]string {
	data := "none here (NATS runs elsewhere)"
	if dataDir != "" {
		data = dataDir + " (NATS JetStream store"
		if credsDir != "" {
			data += "; signing keys in keys/"
		}
		data += ")"
	}
	state, logs := "none (no attach manager)", "none (no attach manager)"
	if cfg != nil {
		state = cfg.Host.StateDir
		logs = cfg.Host.LogDir + " (replica output; up itself logs to stderr)"
	}
	creds := "none (the server takes no credentials)"
	switch {
	case credsDir != "":
		creds = filepath.Join(credsDir, "<role>.creds") + " (callers: " + string(auth.RoleClient) + ".creds, admin commands: " + string(auth.RoleAdmin) + ".creds)"
	case connCfg.CredsFile != "":
		creds = connCfg.CredsFile + " (--creds)"
	case dataDir == "":
		creds = "as given by the --server connection flags"
	}
	return [][2]string{
		{"data", data},
		{"state", state},
		{"logs", logs},
		{"credentials", creds},
		// The HTTP endpoint's line ({"http", URL}) goes here.
	}
}

// writeWhere prints one "muster up: what: where" line per entry, aligned.
func writeWhere(w io.Writer, lines [][2]string) {
	width := 0
	for _, l := range lines {
		width = max(width, len(l[0]))
	}
	for _, l := range lines {
		fmt.Fprintf(w, "muster up: %-*s %s\n", width+1, l[0]+":", l[1])
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
