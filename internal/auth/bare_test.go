package auth_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/worker"
)

// TestBareOldCannotBeInjected: with Muster's permissions, mallory (client
// role, plus a replica of her own service T/OTHER/SVC that alice calls)
// cannot send messages into alice's conversation with T/VICTIM/SVC, whose
// OLDs go bare (named by their reply subject, PROTOCOL §6.4). Mallory
// never sees alice's conversation id; she learns alice's inbox prefix
// from the reply subject of a call alice made to her service, and tries
// the counter tokens a notify subject would have without its 128 random
// bits (found by a review: the first version of bare OLDs fell to this).
func TestBareOldCannotBeInjected(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	admin := connect(t, srv, k, auth.RoleAdmin, auth.Scope{})
	alice := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "alice"})
	mallory := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "mallory"})
	mrep := connect(t, srv, k, auth.RoleReplica, auth.Scope{Name: "mrep", Service: "T/OTHER/SVC"})

	// The victim's replica (its credentials play no part in the attack).
	var mu sync.Mutex
	var got []string
	startReplicaOf(t, admin, "vrep", "T/VICTIM/SVC", func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return nil
			}
			mu.Lock()
			got = append(got, string(m.Data))
			mu.Unlock()
			if err := c.Reply(m.Data); err != nil {
				return err
			}
		}
	})

	// Mallory's own replica of T/OTHER/SVC: it sees alice's reply subject.
	seen := make(chan string, 1)
	if _, err := mrep.nc.QueueSubscribe(proto.WarmSubject(proto.MustService("T/OTHER/SVC")), "muster", func(m *nats.Msg) {
		select {
		case seen <- m.Reply:
		default:
		}
		_ = m.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	mrep.nc.Flush()

	c, err := client.New(alice.nc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	cv, _, err := c.Open(cctx, "T/VICTIM/SVC", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(cctx, "T/OTHER/SVC", []byte("x")); err != nil {
		t.Fatal(err)
	}
	reply := <-seen
	prefix := reply[:strings.LastIndexByte(reply, '.')+1] // _INBOX.alice.<nuid>.
	t.Logf("mallory saw %s", reply)
	// Mallory: bare messages to the victim's replica, reply subjects guessed.
	for i := 1; i < 64; i++ {
		if err := mallory.nc.PublishMsg(&nats.Msg{Subject: proto.ReplicaSubject("vrep"),
			Reply: prefix + strconv.FormatUint(uint64(i), 36), Data: []byte("INJECTED")}); err != nil {
			t.Fatal(err)
		}
	}
	// Flushed: the server has routed every injection to the replica
	// before alice's next message, which the replica so receives after
	// them on the same subscription.
	if err := mallory.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, err := cv.Send(cctx, []byte("after")); err != nil || string(got) != "after" {
		t.Fatalf("alice's next message: %q, %v", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0] != "hello" || got[1] != "after" {
		t.Fatalf("alice's conversation %s: the handler saw %q, want only alice's two messages", cv.ID(), got)
	}
}
