package natsconn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/testutil"
)

// With a .creds file, a connection takes the inbox prefix named after
// the user (_INBOX.<name>), the only inbox Muster's permissions let it
// read: a request on a secured server gets its reply. A file without a
// usable name leaves the default prefix.
func TestCredsSetTheUsersInbox(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	s := testutil.StartSecureNATS(t, k)
	creds := func(role auth.Role, name string) string {
		b, err := auth.UserCreds(k, role, name)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), name+".creds")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got := credsUserName(creds(auth.RoleClient, "alice")); got != "alice" {
		t.Fatalf("credsUserName = %q, want alice", got)
	}
	admin, err := Config{URL: s.ClientURL(), CredsFile: creds(auth.RoleAdmin, "ops")}.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Subscribe("muster.rep.echo1", func(m *nats.Msg) { _ = m.Respond([]byte("pong")) }); err != nil {
		t.Fatal(err)
	}
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := Config{URL: s.ClientURL(), CredsFile: creds(auth.RoleClient, "alice")}.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if in := nc.NewInbox(); !strings.HasPrefix(in, "_INBOX.alice.") {
		t.Fatalf("inbox %q, want _INBOX.alice.…", in)
	}
	r, err := nc.Request("muster.rep.echo1", []byte("ping"), 5*time.Second)
	if err != nil || string(r.Data) != "pong" {
		t.Fatalf("request with client creds: %v %v", r, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.creds")
	if err := os.WriteFile(bad, []byte("not a creds file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := credsUserName(bad); got != "" {
		t.Fatalf("credsUserName(bad) = %q, want empty", got)
	}
}
