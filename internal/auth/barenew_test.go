package auth_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// TestBareNewWithOlderClientCredentials: a client whose credentials came
// from before bare NEWs (no publish grant on muster.new.>) still opens
// every conversation: its bare NEW is refused by the server, it sends the
// NEW with headers instead and sends no more bare NEWs. A client with
// today's credentials sends its second conversation's NEW bare, and the
// server refuses nothing it or the replica does.
func TestBareNewWithOlderClientCredentials(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	const svc = "T/BARENEW/SVC"
	ctx := testutil.Context(t, 30*time.Second)
	att := connect(t, srv, k, auth.RoleAttach, auth.Scope{Name: "host1"})
	ajs, _ := jetstream.New(att.nc)
	if _, err := streams.EnsureQueue(ctx, ajs); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.EnsureBucket(ctx, ajs, proto.ReplicaBucket); err != nil {
		t.Fatal(err)
	}
	rep := connect(t, srv, k, auth.RoleReplica, auth.Scope{Name: "bnrep", Service: svc})
	startReplicaOf(t, rep, "bnrep", svc, func(ctx context.Context, c *worker.Conv) error {
		return c.Steps(ctx, func(_ context.Context, m *worker.Message) ([]byte, bool, error) {
			return m.Data, string(m.Data) == "bye", nil
		})
	})
	admin := connect(t, srv, k, auth.RoleAdmin, auth.Scope{})
	bare := make(chan *nats.Msg, 16)
	if _, err := admin.nc.ChanSubscribe(proto.NewSubject(proto.MustService(svc)), bare); err != nil {
		t.Fatal(err)
	}
	if err := admin.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	converse := func(cli *client.Client, n int) {
		t.Helper()
		ctx := testutil.Context(t, 10*time.Second)
		for i := 0; i < n; i++ {
			cv, got, err := cli.Open(ctx, svc, []byte("one"))
			if err != nil || string(got) != "one" {
				t.Fatalf("conversation %d: Open = %q, %v", i+1, got, err)
			}
			if got, err := cv.Send(ctx, []byte("bye")); err != nil || string(got) != "bye" {
				t.Fatalf("conversation %d: Send = %q, %v", i+1, got, err)
			}
			if cv.Ended() == nil {
				t.Fatalf("conversation %d: not ended by the replica", i+1)
			}
		}
	}

	// Today's client credentials: the second NEW goes bare.
	now := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "now"})
	cli, err := client.New(now.nc)
	if err != nil {
		t.Fatal(err)
	}
	converse(cli, 3)
	select {
	case m := <-bare:
		if len(m.Header) != 0 || !strings.HasPrefix(m.Reply, auth.InboxPrefix(auth.Scope{Name: "now"}.UserName(auth.RoleClient))) {
			t.Fatalf("bare NEW with headers %v, reply subject %q", m.Header, m.Reply)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NEW went bare with today's credentials")
	}
	if v := append(now.violations(), rep.violations()...); len(v) != 0 {
		t.Fatalf("refused with today's credentials: %v", v)
	}
	for len(bare) > 0 {
		<-bare
	}

	// Credentials from before: refused once, then with headers.
	creds, err := auth.ScopedUserCredsWithout(k, auth.RoleClient, auth.Scope{Name: "old"}, "muster.new.>")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "old.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	onc, err := nats.Connect(srv.ClientURL(), nats.UserCredentials(path),
		nats.CustomInboxPrefix(auth.InboxPrefix(auth.Scope{Name: "old"}.UserName(auth.RoleClient))),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if strings.Contains(err.Error(), `Publish to "`+proto.NewSubject(proto.MustService(svc))+`"`) {
				refused.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer onc.Close()
	old, err := client.New(onc)
	if err != nil {
		t.Fatal(err)
	}
	converse(old, 4)
	if len(bare) != 0 {
		t.Fatalf("%d bare NEWs of the older credentials reached the subject", len(bare))
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := refused.Load(); n != 1 {
			return fmt.Errorf("the server refused %d bare NEWs of the older credentials, want 1 (tried once, then with headers)", n)
		}
		return nil
	})
}
