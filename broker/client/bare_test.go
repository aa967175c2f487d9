package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// TestOldGoesBareOnlyWhenOffered: the client sends a conversation's OLDs
// with no headers exactly when the replica's reply to NEW said
// Muster-Bare: 1 (the Go replica does); to a replica that did not (one
// written to an older protocol, here raw NATS), every OLD keeps
// Muster-Op, Muster-Conv and Muster-Deadline. EOC keeps its headers
// either way. A spy on each replica's private subject sees the wire.
func TestOldGoesBareOnlyWhenOffered(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(echoConv, worker.WithService("T/BARE/GO"), worker.WithReplicaID("bgo1"))
	// The older replica: answers NEW on its service's warm subject without
	// Muster-Bare, and every message on its private subject.
	old := testutil.Connect(t, e.Server)
	if _, err := old.Subscribe(proto.WarmSubject(proto.MustService("T/BARE/OLD")), func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(proto.HdrReplica, "bold1")
		r.Header.Set(proto.HdrConv, "c1")
		r.Data = m.Data
		_ = old.PublishMsg(r)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Subscribe(proto.ReplicaSubject("bold1"), func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	old.Flush()
	spy := testutil.Connect(t, e.Server)
	var mu sync.Mutex
	seen := map[string][]nats.Header{}
	for _, id := range []string{"bgo1", "bold1"} {
		if _, err := spy.Subscribe(proto.ReplicaSubject(id), func(m *nats.Msg) {
			mu.Lock()
			seen[id] = append(seen[id], m.Header)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	spy.Flush()
	ctx := testutil.Context(t, 10*time.Second)
	for _, svc := range []string{"T/BARE/GO", "T/BARE/OLD"} {
		cv, _, err := e.Client.Open(ctx, svc, []byte("one"))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"two", "three"} {
			if got, err := cv.Send(ctx, []byte(s)); err != nil || string(got) != s {
				t.Fatalf("%s: Send %q = %q, %v", svc, s, got, err)
			}
		}
		if err := cv.End(ctx); err != nil && svc == "T/BARE/GO" {
			t.Fatalf("%s: End: %v", svc, err)
		}
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen["bgo1"]) < 3 || len(seen["bold1"]) < 3 {
			return fmt.Errorf("the spy saw %d messages to the Go replica and %d to the older one, want 3 each", len(seen["bgo1"]), len(seen["bold1"]))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, h := range seen["bgo1"][:2] {
		if len(h) != 0 {
			t.Errorf("OLD %d to the Go replica (it offered bare OLDs) had headers %v", i+2, h)
		}
	}
	if h := seen["bgo1"][2]; h.Get(proto.HdrOp) != proto.OpEOC || h.Get(proto.HdrConv) == "" {
		t.Errorf("EOC to the Go replica: headers %v, want Muster-Op: EOC and Muster-Conv", h)
	}
	for i, h := range seen["bold1"][:2] {
		if h.Get(proto.HdrOp) != proto.OpOld || h.Get(proto.HdrConv) != "c1" || h.Get(proto.HdrDeadline) == "" {
			t.Errorf("OLD %d to the older replica (no Muster-Bare): headers %v, want Muster-Op, Muster-Conv and Muster-Deadline", i+2, h)
		}
	}
}

// Cancel of a conversation while another goroutine waits in Send for a
// message the replica has not answered ends that Send at once with
// 0003/0011 (the replica answers no cancelled message), not at its
// deadline.
func TestCancelEndsAPendingSend(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	took := make(chan struct{}, 1)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return nil
			}
			if string(m.Data) == "hold" {
				took <- struct{}{}
				<-ctx.Done()
				return nil
			}
			if err := c.Reply(m.Data); err != nil {
				return err
			}
		}
	}, worker.WithService("T/CANCEL/SEND"))
	ctx := testutil.Context(t, 20*time.Second)
	cv, _, err := e.Client.Open(ctx, "T/CANCEL/SEND", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { _, err := cv.Send(ctx, []byte("hold")); sent <- err }()
	<-took
	if err := cv.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-sent:
		if !errors.Is(err, proto.ErrCancelled) {
			t.Fatalf("pending Send: %v, want 0003/0011", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending Send still waiting 5s after Cancel")
	}
}
