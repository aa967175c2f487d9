package broker_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestFailingServiceIsProbed: while a service is failing its callers get
// 0900/0004 at once and nothing queues, but the broker still asks the
// failing manager for one probe replica per ProbeInterval, so a fixed
// program is tried again.
func TestFailingServiceIsProbed(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc, id = "T/PROBE/SVC", "probe-attach"
	notes, err := e.NC.SubscribeSync(proto.AttachSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(e.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 20*time.Second)
	kv, err := js.KeyValue(ctx, proto.AttachBucket)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(proto.AttachInfo{ID: id, Host: "test", Version: "test", Services: []string{svc}, HeartbeatMS: 60000,
		Updated: time.Now().UnixMilli(), Failing: map[string]string{svc: "exit 1 before registering, 3 times"}})
	if _, err := kv.Put(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	call := func() *proto.Error {
		t.Helper()
		r, err := e.NC.RequestMsgWithContext(ctx, nats.NewMsg(proto.CallSubject(proto.MustService(svc))))
		if err != nil {
			t.Fatal(err)
		}
		return proto.ErrorFromHeader(r.Header)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := call(); got == nil || got.Code != proto.CodeServiceFailing {
			return got
		}
		return nil
	})
	for range 5 {
		if got := call(); got == nil || got.Code != proto.CodeServiceFailing {
			t.Fatalf("call of a failing service: %v, want 0900/0004", got)
		}
	}
	m, err := notes.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no probe notification for the failing service: %v", err)
	}
	n, err := proto.DecodeNotification(m.Data)
	if err != nil || n.Service != svc || n.Missing != 1 || n.Pending != 0 || n.Target != id {
		t.Fatalf("probe notification %+v, %v", n, err)
	}
	if m, err := notes.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("a second notification within ProbeInterval (%v): %s", broker.ProbeInterval, m.Data)
	}
}
