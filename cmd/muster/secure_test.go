package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/testutil"
)

// TestUpSecure: `muster up --secure` runs its NATS server with
// credentials, one .creds file per role (0600) in DATA/creds. The demo
// service starts on demand with the replica's credentials and answers a
// call made with the client's; a call without credentials is refused, and
// with the client's credentials every attack of the security issue is
// refused by the server (snooping, serving, answering into another inbox,
// IMMED, forged notifications and records, stealing queued requests).
func TestUpSecure(t *testing.T) {
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("TMPDIR", t.TempDir())
	stderr, done := startUp(t, ctx, "--nats-listen", addr, "--data", data, "--log-level", "warn")
	creds := filepath.Join(data, "creds")
	if !strings.Contains(stderr.String(), "--creds "+filepath.Join(creds, "client.creds")) {
		t.Errorf("the banner does not show the client's --creds:\n%s", stderr)
	}
	if !regexp.MustCompile(`muster up: credentials: +` + regexp.QuoteMeta(filepath.Join(creds, "<role>.creds"))).MatchString(stderr.String()) {
		t.Errorf("the banner does not say where the credentials are:\n%s", stderr)
	}
	for _, role := range []string{"client", "replica", "attach", "broker", "admin"} {
		st, err := os.Stat(filepath.Join(creds, role+".creds"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s.creds: %v, mode %v; want 0600", role, err, st)
		}
	}
	server := "--server=nats://" + addr
	client := "--creds=" + filepath.Join(creds, "client.creds")
	testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		r := runApp(context.Background(), nil, "call", server, client, "--timeout", "5s", demo.EchoService, "hello")
		if r.err != nil {
			return fmt.Errorf("%v: %s", r.err, r.stderr.String())
		}
		if got := r.stdout.String(); got != "hello\n" {
			return fmt.Errorf("stdout %q", got)
		}
		return nil
	})
	checkReplicaScoped(t, "nats://"+addr, os.Getenv("TMPDIR"))
	checkAttachScoped(t, "nats://"+addr, filepath.Join(creds, "attach.creds"))
	if r := runApp(context.Background(), nil, "call", server, "--timeout", "2s", demo.EchoService, "hello"); r.err == nil || !strings.Contains(r.stderr.String()+r.err.Error(), "Authorization Violation") {
		t.Errorf("call without credentials: %v %s; want an authorization violation", r.err, r.stderr.String())
	}

	// With the client's credentials, snooping is refused by the server.
	conn, violations := watchedConn(t, "nats://"+addr, filepath.Join(creds, "client.creds"))
	refused := func(what string, try func() error) {
		t.Helper()
		if err := try(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		expectViolation(t, violations, what)
	}
	pub := func(subject string, hdr map[string]string) func() error {
		return func() error {
			m := nats.NewMsg(subject)
			for k, v := range hdr {
				m.Header.Set(k, v)
			}
			return conn.PublishMsg(m)
		}
	}
	// The five attacks of the issue, as a holder of client credentials.
	refused("snoop on callers (muster.svc.>)", func() error { _, err := conn.SubscribeSync("muster.svc.>"); return err })
	refused("snoop on queued calls (muster.call.>)", func() error { _, err := conn.SubscribeSync("muster.call.>"); return err })
	refused("serve a warm subject", func() error { _, err := conn.QueueSubscribeSync("muster.svc.DEMO.ECHO.ECHO", "muster"); return err })
	refused("answer into another inbox (muster.fwd)", pub("muster.fwd.DEMO.ECHO.ECHO", map[string]string{"Muster-Reply": "_INBOX.victim.1"}))
	refused("IMMED a replica", pub("muster.ctl.anyreplica", map[string]string{"Muster-Op": "IMMED"}))
	refused("forge a notification", pub("muster.attach.host.vm", nil))
	refused("forge an attach record", pub("$KV.muster_attach.forged", nil))
	refused("forge a replica record", pub("$KV.muster_replicas.forged", nil))
	refused("steal a queued request", pub("$JS.API.CONSUMER.MSG.NEXT.MUSTER_QUEUE.q4_DEMO4_ECHO4_ECHO", nil))

	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}
}

// credsUser returns the user claims of the .creds file at path.
func credsUser(t *testing.T, path string) *jwt.UserClaims {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

// watchedConn connects to url with the .creds file at path; the server's
// asynchronous errors (permission violations) arrive on the channel.
func watchedConn(t *testing.T, url, path string) (*nats.Conn, chan error) {
	t.Helper()
	opts, err := natsconn.Config{URL: url, CredsFile: path}.Options()
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	nc, err := nats.Connect(url, append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))...)
	if err != nil {
		t.Fatalf("connect with %s: %v", path, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// expectViolation waits up to 5s for a permissions violation on errs.
func expectViolation(t *testing.T, errs chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s: allowed, want a permissions violation", what)
	}
}

// checkReplicaScoped finds the credentials the attach manager gave the
// running demo replica (in its temp dir under tmp) and checks they are its
// own: named after its replica id (the temp dir's name), allowed its own
// service's warm subject, refused another service's.
func checkReplicaScoped(t *testing.T, url, tmp string) {
	t.Helper()
	var found []string
	_ = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == attach.ReplicaCredsFile {
			found = append(found, p)
		}
		return nil
	})
	if len(found) == 0 {
		t.Fatalf("no %s under %s: the replica did not get its own credentials", attach.ReplicaCredsFile, tmp)
	}
	path := found[0]
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", path, st, err)
	}
	if uc, id := credsUser(t, path), filepath.Base(filepath.Dir(path)); uc.Name != id {
		t.Errorf("replica creds name %q, want its replica id %q", uc.Name, id)
	}
	nc, errs := watchedConn(t, url, path)
	if _, err := nc.SubscribeSync("muster.held.DEMO.ECHO.ECHO"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatalf("the replica's creds are refused its own service: %v", err)
	default:
	}
	if _, err := nc.SubscribeSync("muster.svc.DEMO.OTHER.ECHO"); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "the replica's creds subscribing to another service's warm subject")
}

// checkAttachScoped: the attach manager's credentials are named after its
// id and may not write another manager's registration record.
func checkAttachScoped(t *testing.T, url, path string) {
	t.Helper()
	uc := credsUser(t, path)
	if uc.Name == "attach" || uc.Name == "" {
		t.Fatalf("attach.creds user %q: not named after the manager's id", uc.Name)
	}
	nc, errs := watchedConn(t, url, path)
	if err := nc.Publish("$KV.muster_attach.not-"+uc.Name, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "attach.creds writing another manager's record")
}
