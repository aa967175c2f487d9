package client_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestLateNoRespondersIsNoReply: a NATS no-responders status (Status:
// 503) that reaches a waiting call late, while its last check is failing,
// must not be taken for the reply: the call would end with an empty body
// and no error, as if the service had answered. Under a burst (3,000
// concurrent calls, ping 50 ms) hundreds of calls ended so. Here a
// subscriber on the warm subject swallows the call, and the 503 arrives
// during the second FIND, which nobody answers.
func TestLateNoRespondersIsNoReply(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	svc := proto.MustService("T/LATE/NR")
	sink := testutil.Connect(t, e.Server)
	if _, err := sink.Subscribe(proto.WarmSubject(svc), func(*nats.Msg) {}); err != nil { // takes it, never answers
		t.Fatal(err)
	}
	var finds atomic.Int32
	if _, err := sink.Subscribe(proto.HeldSubject(svc), func(m *nats.Msg) {
		if m.Header.Get(proto.HdrOp) != proto.OpFind || finds.Add(1) != 2 {
			return // no answer: a miss
		}
		late := nats.NewMsg(m.Header.Get(proto.HdrReply)) // the warm request's 503, late
		late.Header.Set(proto.HdrNATSStatus, "503")
		late.Header.Set("Nats-Subject", proto.WarmSubject(svc))
		_ = sink.PublishMsg(late)
		_ = sink.Flush()
	}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(testutil.Connect(t, e.Server), client.WithPingInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.CallMsg(testutil.Context(t, 5*time.Second), svc.String(), []byte("x"), nil)
	if err == nil {
		t.Fatalf("call succeeded with %q, header %v: a no-responders status taken for the reply", r.Data, r.Header)
	}
	t.Logf("call: %v", err)
}
