package auth_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// byeSteps echoes each message and ends the conversation with "bye".
func byeSteps(ctx context.Context, c *worker.Conv) error {
	return c.Steps(ctx, func(_ context.Context, m *worker.Message) ([]byte, bool, error) {
		return m.Data, string(m.Data) == "bye", nil
	})
}

// ensureAssets makes the queue stream and the replica bucket with an
// attach manager's credentials, as one does before replicas start.
func ensureAssets(t *testing.T, srv *server.Server, k *auth.Keys) {
	t.Helper()
	ctx := testutil.Context(t, 30*time.Second)
	att := connect(t, srv, k, auth.RoleAttach, auth.Scope{Name: "host1"})
	ajs, _ := jetstream.New(att.nc)
	if _, err := streams.EnsureQueue(ctx, ajs); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.EnsureBucket(ctx, ajs, proto.ReplicaBucket); err != nil {
		t.Fatal(err)
	}
}

// converse opens n conversations one after another and ends each from the
// replica's side (byeSteps).
func converse(t *testing.T, cli *client.Client, svc string, n int) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	for i := 0; i < n; i++ {
		cv, got, err := cli.Open(ctx, svc, []byte("one"))
		if err != nil || string(got) != "one" {
			t.Fatalf("conversation %d: Open = %q, %v", i+1, got, err)
		}
		if got, err := cv.Send(ctx, []byte("bye")); err != nil || string(got) != "bye" || cv.Ended() == nil {
			t.Fatalf("conversation %d: Send = %q, %v (ended %v)", i+1, got, err, cv.Ended())
		}
	}
}

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
	ensureAssets(t, srv, k)
	rep := connect(t, srv, k, auth.RoleReplica, auth.Scope{Name: "bnrep", Service: svc})
	startReplicaOf(t, rep, "bnrep", svc, byeSteps, worker.WithCapacity(16))
	admin := connect(t, srv, k, auth.RoleAdmin, auth.Scope{})
	bare := make(chan *nats.Msg, 16)
	if _, err := admin.nc.ChanSubscribe(proto.NewSubject(proto.MustService(svc)), bare); err != nil {
		t.Fatal(err)
	}
	if err := admin.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Today's client credentials: the second NEW goes bare.
	now := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "now"})
	cli, err := client.New(now.nc)
	if err != nil {
		t.Fatal(err)
	}
	converse(t, cli, svc, 3)
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

	// Credentials from before: refused, then with headers.
	oldScope := auth.Scope{Name: "old"}
	creds, err := auth.ScopedUserCredsWithout(k, auth.RoleClient, oldScope, "muster.new.>")
	if err != nil {
		t.Fatal(err)
	}
	ou := connectCreds(t, srv, creds, auth.RoleClient, oldScope)
	old, err := client.New(ou.nc)
	if err != nil {
		t.Fatal(err)
	}
	converse(t, old, svc, 1) // answered bare: the next NEWs try bare
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
	converse(t, old, svc, 2)
	if len(bare) != 0 {
		t.Fatalf("%d bare NEWs of the older credentials reached the subject", len(bare))
	}
	refusal := `Publish to "` + proto.NewSubject(proto.MustService(svc)) + `"`
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := ou.count(refusal); n < 1 || n > 8 {
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
	ensureAssets(t, srv, k)
	scope := auth.Scope{Name: "oldrep", Service: svc}
	newSubject := proto.NewSubject(proto.MustService(svc))
	creds, err := auth.ScopedUserCredsWithout(k, auth.RoleReplica, scope, newSubject+" muster")
	if err != nil {
		t.Fatal(err)
	}
	rep := connectCreds(t, srv, creds, auth.RoleReplica, scope)
	startReplicaOf(t, rep, "oldrep", svc, byeSteps)
	cl := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "cli"})
	cli, err := client.New(cl.nc)
	if err != nil {
		t.Fatal(err)
	}
	converse(t, cli, svc, 5)
	if err := rep.nc.Flush(); err != nil { // any refusal still on its way has come
		t.Fatal(err)
	}
	if n := rep.count(`Subscription to "` + newSubject + `"`); n != 1 {
		t.Fatalf("the server refused the bare-NEW subscription %d times, want 1 (asked once, then not)", n)
	}
	if v := cl.violations(); len(v) != 0 {
		t.Fatalf("the client was refused: %v", v)
	}
}
