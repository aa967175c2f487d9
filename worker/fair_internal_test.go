package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// Requests that wait in the queue go before warm calls that come later:
// a replica that frees its slot while queued requests wait takes them
// first (without waiting pulls, not rejoining the warm path), and only
// then rejoins the warm path, though warm calls hammer it all along.
// Eight rounds, each with a replica of its own: with the replica rejoining
// the warm path as it pulls, a warm call overtook in about half of them.
func TestQueuedRequestsBeforeWarmCalls(t *testing.T) {
	s := testutil.StartNATS(t)
	for round := 1; round <= 8; round++ {
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			queuedBeforeWarm(t, s, proto.MustService(fmt.Sprintf("T/FAIR/Q%d", round)))
		})
	}
}

func queuedBeforeWarm(t *testing.T, s *server.Server, svc proto.Service) {
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 30*time.Second)
	gate := make(chan struct{})
	var mu sync.Mutex
	var served []string
	r := testReplica(t, testutil.Connect(t, s), svc, func(ctx context.Context, c *Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		mu.Lock()
		served = append(served, string(m.Data))
		mu.Unlock()
		if string(m.Data) == "A" {
			<-gate
		}
		return c.Reply(m.Data)
	}, WithCapacity(1))
	startTestReplica(t, r)
	servedNow := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(served)
	}
	waitPullOpen(t, r)
	// A warm call takes the only slot and holds it.
	aDone := make(chan error, 1)
	go func() { _, err := nc.Request(proto.WarmSubject(svc), []byte("A"), 20*time.Second); aDone <- err }()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if len(servedNow()) == 0 {
			return errors.New("A not taken yet")
		}
		return nil
	})
	// The server's advisory that the replica handed a request back.
	naked, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED." + proto.QueueStream + "." + proto.ConsumerName(svc))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Two requests queued meanwhile, as a broker queues them.
	js, _ := jetstream.New(nc)
	callers := make([]*nats.Subscription, 2)
	for i, q := range []string{"Q1", "Q2"} {
		var err error
		if callers[i], err = nc.SubscribeSync(nats.NewInbox()); err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(proto.QueueSubject(svc))
		m.Header.Set(proto.HdrReply, callers[i].Subject)
		m.Data = []byte(q)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// The replica's open pull brings Q1 while it is full (it hands it
	// back): it knows the queue holds work.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.backlog {
			return errors.New("no backlog seen yet")
		}
		return nil
	})
	// And the server has taken Q1 back: it is next to deliver. (The
	// replica's -NAK and its next pull are handled by different
	// goroutines of the server: a pull that overtook the -NAK would bring
	// Q2 first, a race of the server's and not the order under test.)
	if _, err := naked.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no advisory that Q1 was handed back: %v", err)
	}
	// Warm calls hammer the service from now on.
	hammer, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var tries atomic.Int64
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for hammer.Err() == nil {
				_, _ = nc.Request(proto.WarmSubject(svc), []byte("w"), time.Second) // 503 while nobody is on the warm path
				tries.Add(1)
			}
		}()
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if tries.Load() < 8 {
			return errors.New("the warm calls have not started yet")
		}
		return nil
	})
	close(gate)
	if err := <-aDone; err != nil {
		t.Fatalf("A: %v", err)
	}
	for i, c := range callers {
		reply, err := c.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("queued request %d: %v", i+1, err)
		}
		if want := fmt.Sprintf("Q%d", i+1); string(reply.Data) != want {
			t.Fatalf("queued caller %d got %q", i+1, reply.Data)
		}
	}
	// Once the queue is empty, the replica is back on the warm path.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if !slices.Contains(servedNow(), "w") {
			return errors.New("no warm call served after the queue emptied")
		}
		return nil
	})
	stop()
	wg.Wait()
	got := servedNow()
	if len(got) < 3 || got[0] != "A" || got[1] != "Q1" || got[2] != "Q2" {
		t.Fatalf("served in the order %v, want A, Q1, Q2 and only then warm calls", got[:min(len(got), 6)])
	}
}

// The priority of queued requests fails open: when the queue cannot be
// read (a refusal, 503 with no consumer leader), a pull is lost, or the
// connection or the consumer's leader changed, the replica rejoins the
// warm path at once rather than stay off it while nothing can be pulled;
// and a request handed back while a waiting pull is open (which takes the
// next queued request as soon as there is one) does not take it off the
// warm path.
func TestQueuedPriorityFailsOpen(t *testing.T) {
	s := testutil.StartNATS(t)
	r := echoReplica(t, testutil.Connect(t, s), proto.MustService("T/FAIR/OPEN"))
	state := func() (backlog, warm bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.backlog, r.warm != nil
	}
	status := func(code string) *nats.Msg {
		r.mu.Lock()
		m := nats.NewMsg(r.pullReplyLocked())
		r.mu.Unlock()
		m.Header.Set(proto.HdrNATSStatus, code)
		return m
	}
	for _, tc := range []struct {
		name string
		do   func()
	}{
		{"503 from the queue", func() { r.onPulled(status("503")) }},
		{"second 409 in a row", func() {
			r.mu.Lock()
			r.pullBackoff = pullRetryMin
			r.mu.Unlock()
			r.onPulled(status("409"))
		}},
		{"404: nothing queued", func() { r.onPulled(status("404")) }},
		{"reconnect or new consumer leader", func() {
			r.mu.Lock()
			r.pullAgainLocked()
			r.mu.Unlock()
		}},
		{"pull lost", func() {
			r.mu.Lock()
			r.pulling, r.pullNoWait, r.pullSign = true, true, time.Now().Add(-time.Hour)
			r.mu.Unlock()
			r.pullDue()
		}},
	} {
		r.mu.Lock()
		r.pulling, r.pullNoWait, r.pullBackoff, r.pullAfter = false, false, 0, time.Time{}
		r.setBacklogLocked()
		r.mu.Unlock()
		if b, w := state(); !b || w {
			t.Fatalf("%s: backlog %v, on the warm path %v before it; want true, false", tc.name, b, w)
		}
		tc.do()
		if b, w := state(); b || !w {
			t.Errorf("%s: backlog %v, on the warm path %v; want false, true", tc.name, b, w)
		}
	}
	r.mu.Lock()
	r.pulling, r.pullNoWait = true, false // a waiting pull is open
	r.setBacklogLocked()
	r.mu.Unlock()
	if b, w := state(); b || !w {
		t.Errorf("handed back with a waiting pull open: backlog %v, on the warm path %v; want false, true", b, w)
	}
}
