package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/embedded"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/xdg"
)

// upNATS starts the embedded NATS server, or with --server uses that one,
// and returns how to connect to it and a note on where it runs. With
// --secure the embedded server runs in operator mode and credsDir holds
// one .creds file per role (else credsDir is "").
func upNATS(c *cli.Context, log *slog.Logger, cleanup *stack) (cfg natsconn.Config, where, storeDir, credsDir string, err error) {
	if c.String(FlagServer) != "" {
		if c.IsSet("nats-listen") || c.IsSet("data") || c.IsSet("insecure") {
			return cfg, "", "", "", errors.New("--nats-listen, --data and --insecure configure the embedded server: not with --server")
		}
		return connConfigFromCLI(c), "external", "", "", nil
	}
	dir, err := dataDir(c.String("data"), log)
	if err != nil {
		return cfg, "", "", "", err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return cfg, "", "", "", err
	}
	cleanup.push(unlock)
	listen := c.String("nats-listen")
	secure := !c.Bool("insecure")
	if !secure {
		log.Warn("INSECURE: the embedded NATS server runs without credentials; anyone who can reach it can serve, snoop on or stop Muster's work", "listen", listen)
	}
	if err := checkListen(listen, secure, log); err != nil {
		return cfg, "", "", "", err
	}
	ecfg := embedded.Config{Listen: listen, StoreDir: dir}
	if _, err := os.Stat(filepath.Join(dir, "jetstream", "$G")); err == nil && secure {
		log.Warn("this data directory holds queued work and registrations from a run without credentials; with credentials they belong to another account and are not seen (run with --insecure to serve them)", "dir", dir)
	}
	if secure {
		k, err := auth.LoadOrCreateKeys(filepath.Join(dir, "keys"))
		if err != nil {
			return cfg, "", "", "", err
		}
		credsDir = filepath.Join(dir, "creds")
		for _, role := range auth.Roles {
			if _, err := auth.WriteCreds(k, credsDir, role); err != nil {
				return cfg, "", "", "", err
			}
		}
		ecfg.Configure = func(o *server.Options) error { return auth.ServerOptions(k, o) }
	}
	s, err := embedded.Start(ecfg)
	if err != nil {
		return cfg, "", "", "", err
	}
	cleanup.push(func() {
		bounded(log, "NATS shutdown", stopTimeout, func() { s.Shutdown(); s.WaitForShutdown() })
	})
	where = "embedded, with credentials"
	if !secure {
		where = "embedded, INSECURE: no credentials"
	}
	return natsconn.Config{URL: s.ClientURL()}, where, dir, credsDir, nil
}

// roleConn is cfg with the .creds file of role in credsDir ("": cfg).
func roleConn(cfg natsconn.Config, credsDir string, role auth.Role) natsconn.Config {
	if credsDir != "" {
		cfg.CredsFile = filepath.Join(credsDir, string(role)+".creds")
	}
	return cfg
}

// dataDir returns the JetStream store directory, created 0700: dir, else
// $XDG_STATE_HOME/muster, else ~/.local/state/muster.
func dataDir(dir string, log *slog.Logger) (string, error) {
	if dir == "" {
		var err error
		if dir, err = xdg.StateDir(); err != nil {
			return "", fmt.Errorf("no --data given: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("data directory is accessible to other users", "dir", dir, "mode", st.Mode().Perm())
	}
	return dir, nil
}

// checkListen fails at once if listen is taken (StartEmbedded would only
// time out) and warns if it is reachable from other hosts.
func checkListen(listen string, secure bool, log *slog.Logger) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--nats-listen %q: %w", listen, err)
	}
	if !isLoopback(host) && !secure {
		log.Warn("the embedded NATS server has no authentication and listens beyond loopback", "listen", listen)
	}
	if port == "0" || port == "-1" {
		return nil
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--nats-listen %s: %w", listen, err)
	}
	return l.Close()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
