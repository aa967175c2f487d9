package auth_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	rctx, stop := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- worker.Run(rctx, worker.HandlerFunc(func(ctx context.Context, c *worker.Conv) error {
			return c.Steps(ctx, func(_ context.Context, m *worker.Message) ([]byte, bool, error) {
				return m.Data, string(m.Data) == "bye", nil
			})
		}), worker.WithConn(rep.nc), worker.WithService(svc), worker.WithReplicaID("bnrep"), worker.WithCapacity(16),
			worker.WithSignals(false), worker.WithLogger(quiet), worker.WithReadyFunc(func() { close(ready) }))
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("replica: %v (violations %v)", err, rep.violations())
	}
	t.Cleanup(func() { stop(); <-done })
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
	converse(old, 1) // answered bare: the next NEWs try bare
	// Eight at once all try bare and are refused, each refusal reported
	// by subject to every Open still trying: all open with headers, and
	// no refusal is taken for a later event of a conversation.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := testutil.Context(t, 10*time.Second)
			cv, _, err := old.Open(ctx, svc, []byte("one"))
			if err == nil {
				var got []byte
				if got, err = cv.Send(ctx, []byte("two")); err == nil && string(got) != "two" {
					err = fmt.Errorf("Send = %q", got)
				}
				if err == nil {
					err = cv.End(ctx)
				}
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a conversation opened at the same time: %v", err)
		}
	}
	converse(old, 2)
	if len(bare) != 0 {
		t.Fatalf("%d bare NEWs of the older credentials reached the subject", len(bare))
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := refused.Load(); n < 1 || n > 8 {
			return fmt.Errorf("the server refused %d bare NEWs of the older credentials, want 1 to 8 (the ones tried at once, then none)", n)
		}
		return nil
	})
}

// TestBareNewWithOlderReplicaCredentials: a replica whose credentials came
// from before bare NEWs (no grant to subscribe muster.new.<service>) has
// its subscription refused once and asks no more, though it returns to
// the warm path after every conversation (capacity 1); a client's bare
// NEW then gets a 503 and the conversation opens with headers.
func TestBareNewWithOlderReplicaCredentials(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	const svc = "T/BARENEW/OLDREP"
	ctx := testutil.Context(t, 30*time.Second)
	att := connect(t, srv, k, auth.RoleAttach, auth.Scope{Name: "host1"})
	ajs, _ := jetstream.New(att.nc)
	if _, err := streams.EnsureQueue(ctx, ajs); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.EnsureBucket(ctx, ajs, proto.ReplicaBucket); err != nil {
		t.Fatal(err)
	}
	scope := auth.Scope{Name: "oldrep", Service: svc}
	creds, err := auth.ScopedUserCredsWithout(k, auth.RoleReplica, scope, proto.NewSubject(proto.MustService(svc))+" muster")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "oldrep.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	var refusals atomic.Int32
	rnc, err := nats.Connect(srv.ClientURL(), nats.UserCredentials(path),
		nats.CustomInboxPrefix(auth.InboxPrefix(scope.UserName(auth.RoleReplica))),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if strings.Contains(err.Error(), `Subscription to "`+proto.NewSubject(proto.MustService(svc))+`"`) {
				refusals.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer rnc.Close()
	startReplicaOf(t, &user{nc: rnc}, "oldrep", svc, func(ctx context.Context, c *worker.Conv) error {
		return c.Steps(ctx, func(_ context.Context, m *worker.Message) ([]byte, bool, error) {
			return m.Data, string(m.Data) == "bye", nil
		})
	})
	cl := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "cli"})
	cli, err := client.New(cl.nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		cv, got, err := cli.Open(ctx, svc, []byte("one"))
		if err != nil || string(got) != "one" {
			t.Fatalf("conversation %d: Open = %q, %v", i+1, got, err)
		}
		if got, err := cv.Send(ctx, []byte("bye")); err != nil || string(got) != "bye" || cv.Ended() == nil {
			t.Fatalf("conversation %d: Send = %q, %v (ended %v)", i+1, got, err, cv.Ended())
		}
	}
	if err := rnc.Flush(); err != nil { // any refusal still on its way has come
		t.Fatal(err)
	}
	if n := refusals.Load(); n != 1 {
		t.Fatalf("the server refused the bare-NEW subscription %d times, want 1 (asked once, then not)", n)
	}
	if v := cl.violations(); len(v) != 0 {
		t.Fatalf("the client was refused: %v", v)
	}
}
