package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
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
	olderReplica(t, e, "T/BARE/OLD", "bold1")
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

// TestBareRepliesOnlyWhenAsked: a Go replica answers a NEW that carried
// Muster-Bare-Replies: 1 without headers, its reply subject naming the
// replica and the conversation, and ends the conversation with a bare
// reply whose reply subject is muster.eoc.<conv>; a NEW without it (an
// older client) gets the headers as before. Raw NATS plays the clients,
// so the wire is what is checked.
func TestBareRepliesOnlyWhenAsked(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/BARE/REPLIES"
	e.StartReplica(byeSteps, worker.WithService(svc), worker.WithReplicaID("brep1"))
	nc := testutil.Connect(t, e.Server)
	for _, asks := range []bool{true, false} {
		notify := nats.NewInbox() + ".1-" + strings.Repeat("x", 22) // a token long enough for bare OLDs
		events, err := nc.SubscribeSync(notify)
		if err != nil {
			t.Fatal(err)
		}
		inbox := nats.NewInbox()
		replies, err := nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(proto.WarmSubject(proto.MustService(svc)))
		m.Reply, m.Data = inbox, []byte("one")
		m.Header.Set(proto.HdrOp, proto.OpNew)
		m.Header.Set(proto.HdrNotify, notify)
		if asks {
			m.Header.Set(proto.HdrBareReplies, "1")
		}
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		r, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("asks=%v: no reply to NEW: %v", asks, err)
		}
		var conv string
		if asks {
			rep, id, ok := proto.ParseConvReply(r.Reply)
			if len(r.Header) != 0 || !ok || rep != "brep1" || string(r.Data) != "one" {
				t.Fatalf("asks: reply to NEW %q with headers %v and reply subject %q, want no headers and %s<replica>.<conv>", r.Data, r.Header, r.Reply, proto.ReplicaPrefix)
			}
			conv = id
		} else {
			conv = r.Header.Get(proto.HdrConv)
			if r.Header.Get(proto.HdrReplica) != "brep1" || r.Header.Get(proto.HdrBare) != "1" || proto.ValidID(conv) != nil || r.Reply != "" {
				t.Fatalf("older client: reply to NEW with headers %v and reply subject %q, want Muster-Replica, Muster-Conv, Muster-Bare and none", r.Header, r.Reply)
			}
		}
		// Bare OLDs: reply subject = the notify subject.
		for _, s := range []string{"two", "bye"} {
			if err := nc.PublishRequest(proto.ReplicaSubject("brep1"), notify, []byte(s)); err != nil {
				t.Fatal(err)
			}
			r, err := events.NextMsg(5 * time.Second)
			if err != nil || string(r.Data) != s {
				t.Fatalf("asks=%v: reply to %q: %v, %v", asks, s, r, err)
			}
			switch {
			case s == "two" && (len(r.Header) != 0 || r.Reply != ""):
				t.Fatalf("asks=%v: plain reply with headers %v and reply subject %q, want neither", asks, r.Header, r.Reply)
			case s == "bye" && asks && (len(r.Header) != 0 || r.Reply != proto.EOCReplySubject(conv)):
				t.Fatalf("asks: ending reply with headers %v and reply subject %q, want none and %q", r.Header, r.Reply, proto.EOCReplySubject(conv))
			case s == "bye" && !asks && (r.Header.Get(proto.HdrStatus) != proto.StatusEOC || r.Reply != ""):
				t.Fatalf("older client: ending reply with headers %v and reply subject %q, want Muster-Status: eoc and none", r.Header, r.Reply)
			}
		}
	}
	// And the Go client, which asks: a conversation the replica ends.
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, svc, []byte("one"))
	if err != nil || cv.Replica() != "brep1" {
		t.Fatalf("Open: %v (replica %q)", err, cv.Replica())
	}
	if got, err := cv.Send(ctx, []byte("bye")); err != nil || string(got) != "bye" {
		t.Fatalf("Send bye = %q, %v", got, err)
	}
	if err := cv.Ended(); !errors.Is(err, proto.ErrEOC) {
		t.Fatalf("after the replica ended it: Ended() = %v, want EOC", err)
	}
	if _, err := cv.Send(ctx, []byte("more")); !errors.Is(err, proto.ErrAfterEOC) {
		t.Fatalf("Send after the end = %v, want %v", err, proto.ErrAfterEOC)
	}
}

// TestBareNew: once a replica of the service answered a NEW bare (its
// version takes bare NEWs), the Go client sends the next NEWs bare, to
// the service's NEW subject, with the conversation's event subject as
// reply subject and no headers at all. When no replica takes them any
// more (here only an older one is left, on the warm subject), the bare
// NEW gets a 503 and the client sends it with headers to the warm subject
// at once, and keeps doing so for a while rather than paying a 503 per
// conversation.
func TestBareNew(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/BARENEW/GO"
	rep := e.StartReplica(byeSteps, worker.WithService(svc), worker.WithReplicaID("bnew1"))
	s := proto.MustService(svc)
	spy := testutil.Connect(t, e.Server)
	warm, bare := make(chan *nats.Msg, 16), make(chan *nats.Msg, 16)
	if _, err := spy.ChanSubscribe(proto.WarmSubject(s), warm); err != nil {
		t.Fatal(err)
	}
	bareSub, err := spy.ChanSubscribe(proto.NewSubject(s), bare)
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 20*time.Second)
	converse := func(name, want string) *client.Conv {
		t.Helper()
		cv, got, err := e.Client.Open(ctx, svc, []byte(name))
		if err != nil {
			t.Fatalf("%s: Open: %v", name, err)
		}
		if string(got) != name || cv.Replica() != want {
			t.Fatalf("%s: Open = %q (replica %q, want %q)", name, got, cv.Replica(), want)
		}
		if got, err := cv.Send(ctx, []byte("two")); err != nil || string(got) != "two" {
			t.Fatalf("%s: Send = %q, %v", name, got, err)
		}
		return cv
	}
	next := func(ch chan *nats.Msg, what string) *nats.Msg {
		t.Helper()
		select {
		case m := <-ch:
			return m
		case <-time.After(5 * time.Second):
			t.Fatalf("the spy saw no %s", what)
			return nil
		}
	}
	none := func(ch chan *nats.Msg, what string) {
		t.Helper()
		if err := spy.Flush(); err != nil { // what was sent before reached the spy
			t.Fatal(err)
		}
		if len(ch) != 0 {
			t.Fatalf("the spy saw %d %s, want none", len(ch), what)
		}
	}

	cv := converse("c1", "bnew1")
	if m := next(warm, "first NEW on the warm subject"); m.Header.Get(proto.HdrOp) != proto.OpNew || m.Header.Get(proto.HdrBareReplies) != "1" {
		t.Fatalf("first NEW with headers %v, want Muster-Op: NEW and Muster-Bare-Replies: 1", m.Header)
	}
	_ = cv.End(ctx)
	cv = converse("c2", "bnew1")
	if m := next(bare, "bare NEW"); len(m.Header) != 0 || string(m.Data) != "c2" || !strings.Contains(m.Reply, "-") {
		t.Fatalf("second NEW: headers %v, data %q, reply subject %q; want a bare NEW named by its event subject", m.Header, m.Data, m.Reply)
	}
	none(warm, "NEWs on the warm subject")
	if got, err := cv.Send(ctx, []byte("bye")); err != nil || string(got) != "bye" || cv.Ended() == nil {
		t.Fatalf("bare-opened conversation: Send bye = %q, %v; ended %v", got, err, cv.Ended())
	}

	// Only an older replica left: NEW with headers on the warm subject.
	rep.Cancel()
	if err := rep.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("replica stopped with %v", err)
	}
	olderReplica(t, e, svc, "bold2")
	// The spy leaves the NEW subject: nobody takes bare NEWs now.
	if err := bareSub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil { // the server has taken the UNSUB
		t.Fatal(err)
	}
	for len(warm) > 0 {
		<-warm
	}
	converse("c3", "bold2") // its bare NEW got a 503
	if m := next(warm, "NEW with headers after the 503"); m.Header.Get(proto.HdrOp) != proto.OpNew || string(m.Data) != "c3" {
		t.Fatalf("after the 503: headers %v, data %q", m.Header, m.Data)
	}
	// Someone takes bare NEWs again, but the client keeps to headers
	// for a while (bareNewBackoff, 1 s; this takes milliseconds).
	if _, err := spy.ChanSubscribe(proto.NewSubject(s), bare); err != nil {
		t.Fatal(err)
	}
	none(bare, "bare NEWs")
	converse("c4", "bold2")
	next(warm, "NEW with headers")
	none(bare, "bare NEWs during the back-off")
}

// TestBareNewRunsOnce: a replica's error reply to a bare NEW is the NEW's
// answer, whatever its code; 0900/0006 from a handler (it was refused
// something itself) is not the server refusing the bare NEW, which the
// client would answer by sending the NEW again with headers.
func TestBareNewRunsOnce(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/BARENEW/ONCE"
	var denies atomic.Int32
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		return c.Steps(ctx, func(_ context.Context, m *worker.Message) ([]byte, bool, error) {
			if string(m.Data) == "deny" {
				denies.Add(1)
				return nil, true, proto.Errorf(proto.CodeNotPermitted, "the handler was refused something")
			}
			return m.Data, string(m.Data) != "one", nil // "one" stays open: its reply goes bare
		})
	}, worker.WithService(svc), worker.WithCapacity(4)) // free while "one" is open
	spy := testutil.Connect(t, e.Server)
	bare := make(chan *nats.Msg, 16)
	if _, err := spy.ChanSubscribe(proto.NewSubject(proto.MustService(svc)), bare); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, svc, []byte("one")) // answered bare: bare NEWs from now on
	if err != nil {
		t.Fatal(err)
	}
	defer cv.Cancel(ctx)
	_, _, err = e.Client.Open(ctx, svc, []byte("deny"))
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeNotPermitted {
		t.Fatalf("Open = %v, want the handler's 0900/0006", err)
	}
	if n := denies.Load(); n != 1 {
		t.Fatalf("the handler ran the NEW %d times, want 1", n)
	}
	if _, _, err := e.Client.Open(ctx, svc, []byte("three")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"deny", "three"} { // both went bare
		select {
		case m := <-bare:
			if string(m.Data) != want {
				t.Fatalf("bare NEW %q, want %q", m.Data, want)
			}
		case <-ctx.Done():
			t.Fatalf("no bare NEW %q", want)
		}
	}
}
