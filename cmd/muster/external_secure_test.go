package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/testutil"
)

// TestExternalSecuredServer: on an external server in operator mode (as
// `muster auth server-config` sets one up), `muster broker` and `muster
// attach` run with their roles' credentials, the attach manager gives each
// replica its own credentials (--replica-signer) or the shared replica
// role's (--replica-creds), and a client with client.creds gets its call
// served from a cold start.
func TestExternalSecuredServer(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	k, err := auth.LoadOrCreateKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	s := testutil.StartSecureNATS(t, k)
	creds := t.TempDir()
	for _, role := range auth.Roles {
		if _, err := auth.WriteCreds(k, creds, role); err != nil {
			t.Fatal(err)
		}
	}
	file := func(role auth.Role) string { return filepath.Join(creds, string(role)+".creds") }
	signer := filepath.Join(keys, auth.ReplicaSignerFile)
	for _, mode := range [][]string{{"--replica-signer", signer}, {"--replica-creds", file(auth.RoleReplica)}} {
		t.Run(mode[0], func(t *testing.T) {
			b := startChild(t, "muster broker ", nil, "broker", "--server", s.ClientURL(), "--creds", file(auth.RoleBroker), "--log-level", "info")
			a := startChild(t, "serving 1 services", nil, append([]string{"attach", "--config", writeAttachConfig(t, ""), "--server", s.ClientURL(),
				"--creds", file(auth.RoleAttach), "--log-level", "warn"}, mode...)...)
			testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
				r := runApp(context.Background(), nil, "call", "--server", s.ClientURL(), "--creds", file(auth.RoleClient), "--timeout", "5s", "EXAMPLE/ECHO/ECHO", "x")
				if r.err != nil || r.stdout.String() != "x\n" {
					return fmt.Errorf("call: %q %v %s", r.stdout.String(), r.err, r.stderr.String())
				}
				return nil
			})
			for _, ch := range []*child{a, b} {
				if err := ch.signalAndWait(t, syscall.SIGTERM); err != nil {
					t.Errorf("stop: %v\n%s", err, ch.stderr)
				}
			}
		})
	}
	// Bad combinations are refused before anything starts.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--replica-signer", signer}, "needs --creds"},
		{[]string{"--creds", file(auth.RoleAttach), "--replica-signer", signer, "--replica-creds", file(auth.RoleReplica)}, "mutually exclusive"},
		{[]string{"--creds", file(auth.RoleAttach), "--replica-signer", filepath.Join(keys, "missing.nk")}, "missing.nk"},
	} {
		r := runApp(context.Background(), nil, append([]string{"attach", "--config", writeAttachConfig(t, ""), "--server", s.ClientURL()}, tc.args...)...)
		if r.err == nil || !strings.Contains(r.err.Error()+r.stderr.String(), tc.want) {
			t.Errorf("attach %v: %v %s; want an error with %q", tc.args, r.err, r.stderr.String(), tc.want)
		}
	}
}
