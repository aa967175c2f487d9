package client_test

import (
	"context"
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

// TestReplyTokenReuse: a bare call answered by the first and only message
// its reply subject got gives that subject to the next call (the NATS
// server's caches then hit: waiters.go, reuseToken); a call that timed out
// or got an error reply does not, so a late reply to it can never reach a
// later call. A spy on the warm subject sees each request's reply subject.
// The replica is raw NATS, so it answers the call that gave up anyway (a Go
// replica's handler would see the call cancelled).
func TestReplyTokenReuse(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc, failing = "T/REUSE/ECHO", "T/REUSE/FAIL"
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		return c.Steps(ctx, func(context.Context, *worker.Message) ([]byte, bool, error) {
			return nil, true, proto.Errorf(proto.CodeServiceError, "asked to fail")
		})
	}, worker.WithService(failing))
	slowDone := make(chan struct{})
	defer func() {
		select {
		case <-slowDone:
		default:
			close(slowDone)
		}
	}()
	rep := testutil.Connect(t, e.Server)
	if _, err := rep.QueueSubscribe(proto.WarmSubject(proto.MustService(svc)), proto.WarmQueue, func(m *nats.Msg) {
		if string(m.Data) == "slow" {
			go func() { <-slowDone; _ = m.Respond([]byte("slow-reply")) }()
			return
		}
		_ = m.Respond(m.Data)
	}); err != nil {
		t.Fatal(err)
	}
	spy := testutil.Connect(t, e.Server)
	var mu sync.Mutex
	replyOf := map[string]string{} // payload → reply subject
	for _, s := range []string{svc, failing} {
		if _, err := spy.Subscribe(proto.WarmSubject(proto.MustService(s)), func(m *nats.Msg) {
			mu.Lock()
			replyOf[string(m.Data)] = m.Reply
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, nc := range []*nats.Conn{rep, spy} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	reply := func(payload string) string {
		t.Helper()
		var r string
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if r = replyOf[payload]; r == "" {
				return fmt.Errorf("the spy has not seen the request %q", payload)
			}
			return nil
		})
		return r
	}
	ctx := testutil.Context(t, 20*time.Second)
	call := func(payload string) {
		t.Helper()
		got, err := e.Client.Call(ctx, svc, []byte(payload))
		if err != nil || string(got) != payload {
			t.Fatalf("Call %q = %q, %v", payload, got, err)
		}
	}

	// One call at a time: every call after the first reuses its subject.
	for i := 1; i <= 5; i++ {
		call(fmt.Sprintf("a%d", i))
	}
	first := reply("a1")
	for i := 2; i <= 5; i++ {
		if r := reply(fmt.Sprintf("a%d", i)); r != first {
			t.Errorf("call a%d went with reply subject %q, want a1's %q again", i, r, first)
		}
	}

	// A call that gives up before its reply: its subject is never used
	// again, and its late reply reaches nobody else.
	late := make(chan *nats.Msg, 1)
	slowCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := e.Client.Call(slowCtx, svc, []byte("slow"))
	cancel()
	if err == nil {
		t.Fatal("the slow call returned before its reply")
	}
	slowReply := reply("slow")
	if slowReply != first {
		t.Errorf("the slow call went with %q, want the spare %q", slowReply, first)
	}
	if _, err := spy.ChanSubscribe(slowReply, late); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	close(slowDone)
	call("b1")
	if r := reply("b1"); r == slowReply {
		t.Fatalf("call b1 reused the reply subject %q of a call that gave up", r)
	}
	select { // the late reply is on the wire now, and b1 got its own
	case m := <-late:
		if string(m.Data) != "slow-reply" {
			t.Fatalf("on the slow call's subject: %q, want its late reply", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("the slow call's late reply never went out")
	}
	for i := 2; i <= 4; i++ {
		p := fmt.Sprintf("b%d", i)
		call(p) // a late "slow-reply" here fails the call's check
		if r := reply(p); r == slowReply {
			t.Fatalf("call %s reused the reply subject %q of a call that gave up", p, r)
		}
	}

	// An error reply: not reused either.
	if _, err := e.Client.Call(ctx, failing, []byte("fail")); err == nil {
		t.Fatal("the failing call succeeded")
	}
	failReply := reply("fail")
	call("c1")
	if r := reply("c1"); r == failReply {
		t.Errorf("call c1 reused the reply subject %q of a call answered with an error", r)
	}
}
