// Package embedded starts an in-process nats-server with JetStream, the
// default NATS of `muster up` and of the tests. Only daemons and tests
// import it: it links the whole server.
package embedded

import (
	"fmt"
	"net"
	"strconv"
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
}

// Start starts a nats-server with JetStream in this process and
// waits until it accepts connections. Stop it with Shutdown and
// WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if port > 0 {
		// nats-server reports a listen failure only to its log (off here)
		// and would leave us waiting for readiness: try the address first.
		l, err := net.Listen("tcp", net.JoinHostPort(host, portStr))
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: listen %s: %w", cfg.Listen, err)
		}
		_ = l.Close()
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
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: new server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS: embedded server on %s not ready within 10s", cfg.Listen)
	}
	return s, nil
}
