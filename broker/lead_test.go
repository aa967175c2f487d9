package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// startBrokers starts n more brokers on e's server, each on its own
// connection (so a test can cut one off as a crash would).
func startBrokers(t *testing.T, e *harness.Env, n int) ([]*broker.Broker, []*nats.Conn) {
	t.Helper()
	var bs []*broker.Broker
	var ncs []*nats.Conn
	for i := range n {
		nc := testutil.Connect(t, e.Server)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := broker.Start(ctx, nc, broker.Config{ID: fmt.Sprintf("extra-%d", i), Logger: harness.Quiet})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Shutdown(ctx)
		})
		bs = append(bs, b)
		ncs = append(ncs, nc)
	}
	return bs, ncs
}

// leaders returns the brokers that lead.
func leaders(bs []*broker.Broker) []*broker.Broker {
	var out []*broker.Broker
	for _, b := range bs {
		if b.Leading() {
			out = append(out, b)
		}
	}
	return out
}

// countNotifications counts the notifications for svc on the observers'
// subject while calls of svc wait for d, with brokers running.
func countNotifications(t *testing.T, e *harness.Env, svc string, d time.Duration) int64 {
	t.Helper()
	var n atomic.Int64
	sub, err := e.NC.Subscribe(proto.NotifySubject(proto.MustService(svc)), func(*nats.Msg) { n.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan struct{})
	for range 4 { // several callers: they land on different brokers
		go func() {
			_, _ = e.Client.Call(ctx, svc, nil) // nothing starts a replica: they wait out d
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	return n.Load()
}

// Exactly one of several brokers leads; the number of notifications while
// work waits does not grow with the number of brokers.
func TestOneLeaderNotifies(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "LEAD/NOTIFY/ONE"
	harness.RegisterAttach(t, e, "lead-attach", svc)
	one := countNotifications(t, e, svc, 2*time.Second)

	more, _ := startBrokers(t, e, 2)
	all := append([]*broker.Broker{e.Broker}, more...)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if l := leaders(all); len(l) != 1 {
			return fmt.Errorf("%d leaders among 3 brokers", len(l))
		}
		return nil
	})
	three := countNotifications(t, e, svc, 2*time.Second)
	t.Logf("notifications in 2s of waiting work: %d with 1 broker, %d with 3", one, three)
	if one == 0 || three == 0 {
		t.Fatalf("no notifications (%d, %d): the count cannot be compared", one, three)
	}
	if float64(three) > 1.5*float64(one)+2 {
		t.Fatalf("3 brokers sent %d notifications, 1 broker %d: they grow with the brokers", three, one)
	}
	// Every notification names the leader's lease epoch.
	ch := make(chan *nats.Msg, 16)
	sub, _ := e.NC.ChanSubscribe(proto.NotifySubject(proto.MustService(svc)), ch)
	defer func() { _ = sub.Unsubscribe() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go func() { _, _ = e.Client.Call(ctx, svc, nil) }()
	select {
	case m := <-ch:
		n, err := proto.DecodeNotification(m.Data)
		if err != nil || n.Lease == 0 || n.Broker != leaders(all)[0].ID() {
			t.Fatalf("notification %+v (%v): want the leader's, with its lease epoch", n, err)
		}
	case <-ctx.Done():
		t.Fatal("no notification")
	}
}

// When the leading broker dies (its connection cut, no release), another
// takes over within 2 s, and a request queued meanwhile is served: its
// notification comes from the new leader.
func TestLeaderTakeover(t *testing.T) {
	e := harness.Start(t, broker.Config{ID: "first"})
	more, ncs := startBrokers(t, e, 2)
	all := append([]*broker.Broker{e.Broker}, more...)
	var lead *broker.Broker
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		l := leaders(all)
		if len(l) != 1 {
			return fmt.Errorf("%d leaders", len(l))
		}
		lead = l[0]
		return nil
	})
	if lead == e.Broker {
		// Make one of the extra brokers lead, so its connection can be cut:
		// shut the first one down (it releases the lease).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = e.Broker.Shutdown(ctx)
		cancel()
		start := time.Now()
		testutil.CheckFor(t, 2*time.Second, 5*time.Millisecond, func() error {
			if l := leaders(more); len(l) != 1 {
				return fmt.Errorf("%d leaders", len(l))
			}
			return nil
		})
		t.Logf("after a clean shutdown of the leader, another led in %v", time.Since(start))
		lead = leaders(more)[0]
		all = more
	}
	var survivors []*broker.Broker
	for i, b := range more {
		if b == lead {
			ncs[i].Close() // a crash: no release, no more renewals
		} else {
			survivors = append(survivors, b)
		}
	}
	start := time.Now()
	testutil.CheckFor(t, 2*time.Second, 5*time.Millisecond, func() error {
		if l := leaders(survivors); len(l) != 1 {
			return fmt.Errorf("%d leaders among the survivors", len(l))
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("a surviving broker took the lead %v after the leader's connection was cut", took)

	// Work queued now is served: the new leader notifies, a replica starts.
	const svc = "LEAD/TAKE/OVER"
	harness.RegisterAttach(t, &harness.Env{T: t, NC: e.NC, Broker: survivors[0]}, "takeover-attach", svc)
	notes, err := e.NC.SubscribeSync(proto.AttachSubject("takeover-attach"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		r, err := e.Client.Call(ctx, svc, []byte("after takeover"))
		if err == nil && string(r) != "after takeover" {
			err = errors.New("wrong reply " + string(r))
		}
		got <- err
	}()
	m, err := notes.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no notification after the takeover: %v", err)
	}
	var n proto.Notification
	_ = json.Unmarshal(m.Data, &n)
	if n.Broker != leaders(survivors)[0].ID() || n.Lease == 0 {
		t.Fatalf("notification %+v, want one from the new leader with its epoch", n)
	}
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		msg, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(msg.Data)
	}, worker.WithService(svc))
	if err := <-got; err != nil {
		t.Fatalf("call queued after the takeover: %v", err)
	}
}
