package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/testutil"
)

// TestSecureUpDefaultDataNeedsNoFlags: with `muster up --secure` on its
// default data directory, `muster call` and `muster service ls` find
// their credentials there (client, admin) without --creds.
func TestSecureUpDefaultDataNeedsNoFlags(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	t.Setenv("TMPDIR", t.TempDir())
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, done := startUp(t, ctx, "--nats-listen", addr, "--log-level", "warn")
	if got := defaultCreds("client"); got != filepath.Join(state, "muster", "creds", "client.creds") {
		t.Fatalf("defaultCreds(client) = %q", got)
	}
	server := "--server=nats://" + addr
	testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		r := runApp(context.Background(), nil, "call", server, "--timeout", "5s", demo.EchoService, "hello")
		if r.err != nil {
			return fmt.Errorf("%v: %s", r.err, r.stderr.String())
		}
		if got := r.stdout.String(); got != "hello\n" {
			return fmt.Errorf("stdout %q", got)
		}
		return nil
	})
	if r := runApp(context.Background(), nil, "service", "ls", server); r.err != nil {
		t.Errorf("service ls: %v %s", r.err, r.stderr.String())
	}
	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}
}
