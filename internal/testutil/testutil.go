// Package testutil is the test harness: real in-process NATS servers on
// random ports with JetStream stores in temp dirs, and polling helpers.
package testutil

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/embedded"
)

// StartNATS starts an embedded NATS server with JetStream on a random
// loopback port, its store in t.TempDir(), shut down at the end of the test.
func StartNATS(t testing.TB) *server.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection to s, closed at the end of the test.
// opts come after the defaults (nats.go's), so they can override them.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), append([]nats.Option{nats.Name(t.Name())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// CheckFor polls fn every step until it returns nil or total has passed,
// then fails the test with fn's last error.
func CheckFor(t testing.TB, total, step time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(step)
	}
}

// Context returns a context that ends after d or with the test.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Reconnecting are connection options for tests that restart NATS:
// reconnect forever every 50ms (nats.go's default waits 2s between tries).
var Reconnecting = []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.ReconnectJitter(0, 0)}

// RestartNATS shuts s down, runs whileDown (if not nil), and starts a new
// server on the same address with the same JetStream store, as a restart
// of the NATS server does: the clients of s reconnect to it. The new server
// is shut down at the end of the test, by a cleanup registered now, so it
// runs before the cleanups registered earlier: stop what needs the server
// (a broker's Shutdown drains through it) in the test itself.
func RestartNATS(t testing.TB, s *server.Server, whileDown func()) *server.Server {
	t.Helper()
	addr := s.Addr().(*net.TCPAddr)
	dir := filepath.Dir(s.StoreDir()) // the server appends "jetstream"
	s.Shutdown()
	s.WaitForShutdown()
	if whileDown != nil {
		whileDown()
	}
	n, err := embedded.Start(embedded.Config{Listen: addr.String(), StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Shutdown()
		n.WaitForShutdown()
	})
	return n
}

// StartSecureNATS is StartNATS in operator mode trusting k: every
// connection needs a role's credentials (internal/auth).
func StartSecureNATS(t testing.TB, k *auth.Keys) *server.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(),
		Configure: func(o *server.Options) error { return auth.ServerOptions(k, o) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}
