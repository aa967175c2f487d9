package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
)

func TestAuthCommand(t *testing.T) {
	dir := t.TempDir()
	// Nothing to read before init: the error names the dir and the fix.
	r := runApp(context.Background(), nil, "auth", "server-config", "--dir", dir)
	if r.err == nil || !strings.Contains(r.err.Error(), filepath.Join(dir, "keys")) || !strings.Contains(r.err.Error(), "muster auth init") {
		t.Fatalf("server-config before init: %v, want an error naming %s/keys and muster auth init", r.err, dir)
	}
	out := run(t, nil, "auth", "init", "--dir", dir)
	for _, role := range []string{"client", "replica", "attach", "broker", "admin"} {
		p := filepath.Join(dir, "creds", role+".creds")
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want a 0600 file", p, st, err)
		}
		if !strings.Contains(out, p) {
			t.Fatalf("init output %q does not list %s", out, p)
		}
	}
	cfg1 := run(t, nil, "auth", "server-config", "--dir", dir)
	run(t, nil, "auth", "init", "--dir", dir) // again: same keys
	if cfg2 := run(t, nil, "auth", "server-config", "--dir", dir); !strings.Contains(cfg2, "resolver: MEMORY") ||
		strings.Split(cfg1, "operator: ")[0] != strings.Split(cfg2, "operator: ")[0] {
		t.Fatalf("server config changed across init or lacks the resolver:\n%s\n%s", cfg1, cfg2)
	}
	creds := run(t, nil, "auth", "creds", "--dir", dir, "--name", "r1", "--service", "DEMO/ECHO/ECHO", "replica")
	tok, err := jwt.ParseDecoratedJWT([]byte(creds))
	if err != nil {
		t.Fatalf("creds output is not a .creds file: %v\n%s", err, creds)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by the replica signer: no permissions of its own (the
	// server applies the signer's template), its service in a tag.
	if uc.Name != "r1" || !uc.HasEmptyPermissions() || uc.IssuerAccount == "" || !slices.Contains(uc.Tags, "svc:DEMO.ECHO.ECHO") {
		t.Fatalf("replica creds: name %q, issuer account %q, tags %v, sub %v", uc.Name, uc.IssuerAccount, uc.Tags, uc.Sub.Allow)
	}
	out2 := filepath.Join(t.TempDir(), "alice.creds")
	run(t, nil, "auth", "creds", "--dir", dir, "--name", "alice", "--out", out2, "client")
	if st, err := os.Stat(out2); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("--out %s: %v %v", out2, st, err)
	}
	r = runApp(context.Background(), nil, "auth", "creds", "--dir", dir, "--service", "DEMO/ECHO/ECHO", "client")
	if r.err == nil || !strings.Contains(r.err.Error(), "replica") {
		t.Fatalf("client scoped to a service: %v, want an error", r.err)
	}
	r = runApp(context.Background(), nil, "auth", "creds", "--dir", dir, "root")
	if r.err == nil || !strings.Contains(r.err.Error(), `"root"`) {
		t.Fatalf("unknown role: %v, want an error naming it", r.err)
	}
	// A seed readable by others is refused, naming the file.
	seed := filepath.Join(dir, "keys", "account.nk")
	if err := os.Chmod(seed, 0o644); err != nil {
		t.Fatal(err)
	}
	r = runApp(context.Background(), nil, "auth", "creds", "--dir", dir, "client")
	if r.err == nil || !strings.Contains(r.err.Error(), seed) {
		t.Fatalf("open seed: %v, want an error naming %s", r.err, seed)
	}
}
