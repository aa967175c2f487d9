package broker_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestOnceQueuesARepeatOnce: a request sent to the brokers with
// Muster-Once is queued once per reply subject; a repeat (a caller that
// heard nothing back sends it again) is answered "queued" with the first
// copy's sequence and not queued again. Without Muster-Once the same
// reply subject queues a second request, as before.
func TestOnceQueuesARepeatOnce(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	svc := proto.MustService("T/ONCE/Q")
	harness.RegisterAttach(t, e, "once-attach", svc.String()) // attachable, never starts anything
	nc := testutil.Connect(t, e.Server)
	inbox, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(e.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 20*time.Second)
	send := func(once bool) string {
		t.Helper()
		m := nats.NewMsg(proto.CallSubject(svc))
		m.Reply = inbox.Subject
		m.Data = []byte("work")
		m.Header.Set(proto.HdrProgress, "1")
		m.Header.Set(proto.HdrTimeout, "10000")
		if once {
			m.Header.Set(proto.HdrOnce, "1")
		}
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		st, err := inbox.NextMsg(5 * time.Second)
		if err != nil || st.Header.Get(proto.HdrStatus) != proto.StatusQueued {
			t.Fatalf("want the request queued: %v %v", st, err)
		}
		return st.Header.Get(proto.HdrSeq)
	}
	queuedNow := func() uint64 {
		t.Helper()
		s, err := js.Stream(ctx, proto.QueueStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	first := send(true)
	if again := send(true); again != first {
		t.Fatalf("repeat answered with sequence %s; want the first copy's %s", again, first)
	}
	if n := queuedNow(); n != 1 {
		t.Fatalf("%d requests queued after a request and its repeat; want 1", n)
	}
	if plain := send(false); plain == first {
		t.Fatalf("a request without %s was taken for a repeat (sequence %s)", proto.HdrOnce, plain)
	}
	if n := queuedNow(); n != 2 {
		t.Fatalf("%d requests queued; want 2", n)
	}
}
