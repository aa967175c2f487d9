package auth_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/testutil"
)

// The attacks of issue 9, tried with client credentials against a real
// server with the real permissions: each is refused with a permission
// violation. (A client may still call: the control case at the end.)
func TestClientAttacksRefused(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	mallory := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "mallory"})
	nc := mallory.nc

	subs := []struct{ name, subject, queue string }{
		{"snoop warm requests", "muster.svc.>", ""},
		{"snoop broker calls", "muster.call.>", ""},
		{"snoop forwards", "muster.fwd.>", ""},
		{"read another client's inbox", "_INBOX.alice.>", ""},
		{"read every inbox", "_INBOX.>", ""},
		{"serve a warm subject", "muster.svc.DEMO.ECHO.ECHO", "muster"},
		{"take a replica's private subject", "muster.rep.r1", ""},
		{"take attach notifications", "muster.attach.host.host1", ""},
	}
	for _, s := range subs {
		t.Run(s.name, func(t *testing.T) {
			var err error
			if s.queue != "" {
				_, err = nc.QueueSubscribe(s.subject, s.queue, func(*nats.Msg) {})
			} else {
				_, err = nc.Subscribe(s.subject, func(*nats.Msg) {})
			}
			if err != nil {
				t.Fatal(err)
			}
			mallory.refused(t, "subscription", s.subject)
		})
	}
	pubs := []struct{ name, subject string }{
		{"IMMED on a replica's control subject", "muster.ctl.r1"},
		{"forged attach notification", "muster.attach.host.host1"},
		{"forged attach record", "$KV.muster_attach.host1"},
		{"forged replica record", "$KV.muster_replicas.r1"},
		{"steal a queued request", "$JS.API.CONSUMER.MSG.NEXT.MUSTER_QUEUE.q4_DEMO4_ECHO4_ECHO"},
		{"queue straight into the stream", "muster.q.DEMO.ECHO.ECHO"},
		{"forward as if a replica (Muster-Reply honoured)", "muster.fwd.DEMO.ECHO.ECHO"},
		{"delete the queue stream", "$JS.API.STREAM.DELETE.MUSTER_QUEUE"},
		{"isolate a host", "muster.attach.ctl.host1"},
		{"read a host's logs", "muster.attach.logs.host1"},
		{"hint the leading broker", "muster.broker.hint.DEMO.ECHO.ECHO"},
		{"take the brokers' lease", "$KV.muster_lead.lead"},
		{"change the host pool", "$KV.muster_pool.host.host1"},
		{"change a service's placement", "$KV.muster_pool.service.DEMO.ECHO.ECHO"},
	}
	for _, p := range pubs {
		t.Run(p.name, func(t *testing.T) {
			m := nats.NewMsg(p.subject)
			m.Header.Set("Muster-Op", "IMMED")
			m.Reply = nc.NewInbox()
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			mallory.refused(t, "publish", p.subject)
		})
	}
	// Control: the same connection may still call (no responders, as
	// nobody serves: the publish is allowed).
	before := len(mallory.violations())
	if _, err := nc.Request("muster.svc.DEMO.ECHO.ECHO", nil, 2*time.Second); err != nats.ErrNoResponders {
		t.Fatalf("client call = %v, want no responders", err)
	}
	if v := mallory.violations(); len(v) != before {
		t.Fatalf("a plain call was refused: %v", v[before:])
	}
}

// A replica started by an attach manager holds credentials scoped to its
// own service and id: it can serve it (TestRolesDoTheirJobs) but cannot
// serve, steal from or impersonate another service or replica.
func TestScopedReplicaStaysInItsService(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	rep := connect(t, srv, k, auth.RoleReplica, auth.Scope{Name: "r1", Service: "DEMO/ECHO/ECHO"})
	nc := rep.nc
	// Its own subjects are allowed (checked first: a refusal here would
	// make every check below pass for the wrong reason).
	for _, s := range []string{"muster.svc.DEMO.ECHO.ECHO", "muster.held.DEMO.ECHO.ECHO", "muster.rep.r1", "muster.ctl.r1"} {
		if _, err := nc.Subscribe(s, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if v := rep.violations(); len(v) > 0 {
		t.Fatalf("scoped replica refused its own subjects: %v", v)
	}
	for _, s := range []string{"muster.svc.DEMO.OTHER.ECHO", "muster.svc.>", "muster.held.DEMO.OTHER.ECHO", "muster.rep.r2", "muster.ctl.r2", "_INBOX.alice.>"} {
		t.Run("subscribe "+s, func(t *testing.T) {
			if _, err := nc.Subscribe(s, func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			rep.refused(t, "subscription", s)
		})
	}
	for _, s := range []string{
		"$KV.muster_replicas.r2",
		"$JS.API.CONSUMER.MSG.NEXT.MUSTER_QUEUE.q4_DEMO5_OTHER4_ECHO",
		"$JS.API.CONSUMER.CREATE.MUSTER_QUEUE.q4_DEMO5_OTHER4_ECHO.muster.q.DEMO.OTHER.ECHO",
		"muster.fwd.DEMO.OTHER.ECHO",
		"muster.ctl.r2",
		"muster.attach.host.host1",
	} {
		t.Run("publish "+s, func(t *testing.T) {
			if err := nc.Publish(s, nil); err != nil {
				t.Fatal(err)
			}
			rep.refused(t, "publish", s)
		})
	}
}

// A call the server refuses (credentials without the permission) fails at
// once with 0900/0006 naming the subject, not at its deadline; a client
// whose reply inbox is refused fails in client.New.
func TestRefusedCallFailsFast(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	// An attach manager's credentials may not call services.
	att := connect(t, srv, k, auth.RoleAttach, auth.Scope{Name: "host1"})
	var chained atomic.Int32 // the connection's own handler still hears of it
	prev := att.nc.ErrorHandler()
	att.nc.SetErrorHandler(func(nc *nats.Conn, s *nats.Subscription, err error) { chained.Add(1); prev(nc, s, err) })
	c, err := client.New(att.nc, client.WithTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Call(context.Background(), svcName, []byte("x"))
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeNotPermitted || !strings.Contains(pe.Description, "muster.svc.DEMO.ECHO.ECHO") {
		t.Fatalf("refused call = %v, want 0900/0006 naming the subject", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refused call failed after %v, want at once (deadline 20s)", d)
	}
	// The client's handler wakes the call first, then calls the
	// connection's own one: wait for it.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if chained.Load() == 0 {
			return errors.New("the connection's own error handler was not called")
		}
		return nil
	})

	// Client credentials, but the default inbox prefix: the inbox is refused.
	creds, _ := auth.UserCreds(k, auth.RoleClient, "alice")
	path, _ := auth.WriteCredsFile(filepath.Join(t.TempDir(), "alice.creds"), creds)
	nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentials(path))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := client.New(nc); !errors.As(err, &pe) || pe.Code != proto.CodeNotPermitted || !strings.Contains(err.Error(), "inbox prefix") {
		t.Fatalf("client.New with a refused inbox = %v, want 0900/0006 with a hint", err)
	}
}
