package broker_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestMusterReplyOnlyOnForwards: on muster.call a Muster-Reply header is
// refused (0900/0001 to the sender) and nothing reaches the inbox it
// names, so a client cannot have its call answered into another caller's
// inbox; a replica's forward on muster.fwd is acknowledged and queued for
// the caller it names.
func TestMusterReplyOnlyOnForwards(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/FWD/X"
	harness.RegisterAttach(t, e, "fwd-attach", svc)
	nc := testutil.Connect(t, e.Server)
	victim, err := nc.SubscribeSync("_INBOX.victim.1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 10*time.Second)

	m := nats.NewMsg(proto.CallSubject(proto.MustService(svc)))
	m.Header.Set(proto.HdrReply, "_INBOX.victim.1")
	m.Header.Set(proto.HdrProgress, "1")
	r, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if e := proto.ErrorFromHeader(r.Header); e == nil || e.Code != proto.CodeBadRequest {
		t.Fatalf("Muster-Reply on muster.call: %v, want 0900/0001", e)
	}
	if got, err := victim.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("the named inbox received %q %v", got.Data, got.Header)
	}

	f := nats.NewMsg(proto.ForwardSubject(proto.MustService(svc)))
	f.Header.Set(proto.HdrReply, "_INBOX.victim.1")
	f.Header.Set(proto.HdrProgress, "1")
	if _, err := nc.RequestMsgWithContext(ctx, f); err != nil {
		t.Fatalf("forward not acknowledged: %v", err)
	}
	st, err := victim.NextMsg(5 * time.Second)
	if err != nil || st.Header.Get(proto.HdrStatus) != proto.StatusQueued {
		t.Fatalf("forwarded caller got %v %v, want the queued status", st, err)
	}
}
