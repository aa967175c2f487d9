package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/testutil"
)

// startSecure starts a real nats-server in operator mode trusting k, on a
// random port, with JetStream in a temp dir.
func startSecure(t *testing.T, k *auth.Keys) *server.Server {
	return testutil.StartSecureNATS(t, k)
}

// user is a connection with one role's credentials; it records every
// permission violation the server reports to it.
type user struct {
	nc   *nats.Conn
	mu   sync.Mutex
	errs []string
}

func (u *user) violations() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.errs...)
}

// refused waits until the server reports a permission violation naming
// subject (publish or subscribe, as verb says).
func (u *user) refused(t *testing.T, verb, subject string) {
	t.Helper()
	want := strings.ToLower("permissions violation for " + verb + " to \"" + subject + "\"")
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, e := range u.violations() {
			if strings.Contains(strings.ToLower(e), want) {
				return nil
			}
		}
		return &missing{want: want, got: u.violations()}
	})
}

type missing struct {
	want string
	got  []string
}

func (m *missing) Error() string {
	return "no " + m.want + " among " + strings.Join(m.got, " | ")
}

// connect writes the creds of role (scope s) to a file and connects with
// them and the user's inbox prefix.
func connect(t *testing.T, srv *server.Server, k *auth.Keys, role auth.Role, s auth.Scope) *user {
	t.Helper()
	creds, err := auth.ScopedUserCreds(k, role, s)
	if err != nil {
		t.Fatal(err)
	}
	return connectCreds(t, srv, creds, role, s)
}

// connectCreds is connect with the given creds (of role, scope s).
func connectCreds(t *testing.T, srv *server.Server, creds []byte, role auth.Role, s auth.Scope) *user {
	t.Helper()
	path, err := auth.WriteCredsFile(filepath.Join(t.TempDir(), "creds", string(role)+".creds"), creds)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("creds file %s: %v %v, want mode 0600", path, st.Mode(), err)
	}
	u := &user{}
	nc, err := nats.Connect(srv.ClientURL(),
		nats.UserCredentials(path),
		nats.CustomInboxPrefix(auth.InboxPrefix(s.UserName(role))),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			u.mu.Lock()
			u.errs = append(u.errs, err.Error())
			u.mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("%s connects with its creds: %v", role, err)
	}
	t.Cleanup(nc.Close)
	u.nc = nc
	return u
}

// count returns how many of the violations reported to u contain s.
func (u *user) count(s string) int {
	n := 0
	for _, e := range u.violations() {
		if strings.Contains(e, s) {
			n++
		}
	}
	return n
}
