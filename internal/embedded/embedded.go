// Package embedded starts an in-process nats-server with JetStream, the
// default NATS of `muster up` and of the tests. Only daemons and tests
// import it: it links the whole server.
package embedded

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an in-process nats-server with JetStream.
type Config struct {
	// Listen is host:port for clients; port 0 or -1 picks a free port.
	Listen string
	// StoreDir is the JetStream store directory (persistent data).
	StoreDir string
	// ServerName names the server (defaults to "muster").
	ServerName string
	// MaxPayload caps message size in bytes (0: NATS default of 1 MiB).
	MaxPayload int32

	// ClusterName, when set, makes the server a node of that NATS cluster
	// (JetStream clustered: assets can then have several replicas). Every
	// node of a cluster needs its own ServerName and StoreDir.
	ClusterName string
	// ClusterListen is host:port for routes from the other nodes; port 0
	// or -1 picks a free port. Required with ClusterName.
	ClusterListen string
	// Routes are the other nodes' cluster addresses (host:port or
	// nats-route://host:port). Listing this node's own address too is
	// allowed, so every node can get the same list; a repeated address
	// counts once.
	Routes []string

	// Logger, if set, gets the server's errors and warnings (a route it
	// cannot reach, a node whose name another node has already) as
	// warnings, and its notices at debug level. Unset: the server logs
	// nothing.
	Logger *slog.Logger

	// Configure, if set, adjusts the server options last, before the
	// server is created (for example auth.ServerOptions: operator mode).
	Configure func(*server.Options) error
}

// Start starts a nats-server with JetStream in this process and
// waits until it accepts connections. Stop it with Shutdown and
// WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	host, port, err := listenAddr(cfg.Listen)
	if err != nil {
		return nil, err
	}
	name := cfg.ServerName
	if name == "" {
		name = "muster"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	if err := cluster(cfg, opts); err != nil {
		return nil, err
	}
	if cfg.Configure != nil {
		if err := cfg.Configure(opts); err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: new server: %w", err)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(serverLog{cfg.Logger}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS: embedded server on %s not ready within 10s", cfg.Listen)
	}
	return s, nil
}

// listenAddr parses host:port and, for a fixed port, checks that it is
// free: nats-server reports a listen failure only to its log (off here)
// and would leave us waiting for readiness. Port 0 becomes RANDOM_PORT.
func listenAddr(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("embedded NATS: listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("embedded NATS: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if port > 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, portStr))
		if err != nil {
			return "", 0, fmt.Errorf("embedded NATS: listen %s: %w", addr, err)
		}
		_ = l.Close()
	}
	return host, port, nil
}

// cluster sets the cluster options of cfg on opts.
func cluster(cfg Config, opts *server.Options) error {
	if cfg.ClusterName == "" {
		if cfg.ClusterListen != "" || len(cfg.Routes) > 0 {
			return fmt.Errorf("embedded NATS: a cluster listen address or routes need a cluster name")
		}
		return nil
	}
	if cfg.ClusterListen == "" {
		return fmt.Errorf("embedded NATS: cluster %q needs a cluster listen address", cfg.ClusterName)
	}
	if cfg.ServerName == "" {
		return fmt.Errorf("embedded NATS: a node of cluster %q needs a server name of its own", cfg.ClusterName)
	}
	host, port, err := listenAddr(cfg.ClusterListen)
	if err != nil {
		return err
	}
	opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port}
	for _, r := range cfg.Routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !strings.Contains(r, "://") {
			r = "nats-route://" + r
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || u.Port() == "" {
			return fmt.Errorf("embedded NATS: route %q: want host:port or nats-route://host:port", r)
		}
		// A route given twice would count twice in the size the
		// server expects of a new cluster (all must vote).
		if !slices.ContainsFunc(opts.Routes, func(o *url.URL) bool { return strings.EqualFold(o.Host, u.Host) }) {
			opts.Routes = append(opts.Routes, u)
		}
	}
	return nil
}
