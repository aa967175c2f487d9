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
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

func TestCallWarmPath(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService))
	got, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" {
		t.Fatalf("reply %q, want hello", got)
	}
	st := brokerStats(t, e, demo.EchoService)
	if st.TotalRequests != 0 {
		t.Fatalf("a warm call went through the broker queue: %+v", st)
	}
}

func TestPlainNATSClient(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService))
	// Warm subject: a plain request is a call.
	r, err := e.NC.Request(proto.WarmSubject(proto.MustService(demo.EchoService)), []byte("plain"), 5*time.Second)
	if err != nil || string(r.Data) != "plain" {
		t.Fatalf("warm: %v %+v", err, r)
	}
	// Broker subject: queued if need be, one reply.
	r, err = e.NC.Request(proto.CallSubject(proto.MustService(demo.EchoService)), []byte("via broker"), 5*time.Second)
	if err != nil || string(r.Data) != "via broker" {
		t.Fatalf("broker: %v %+v", err, r)
	}
	// Unknown service through the broker: 0007/0007 at once.
	r, err = e.NC.Request(proto.CallSubject(proto.MustService("NO/SUCH/SVC")), []byte("x"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Header.Get(proto.HdrError); got != "0007/0007" {
		t.Fatalf("Muster-Error %q, want 0007/0007", got)
	}
	if got := r.Header.Get(proto.HdrServiceErrorCode); got != "70007" {
		t.Fatalf("Nats-Service-Error-Code %q, want 70007", got)
	}
}

func TestUnknownServiceIsPrompt(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	start := time.Now()
	_, err := e.Client.Call(testutil.Context(t, 10*time.Second), "NO/SUCH/SVC", []byte("x"))
	if !errors.Is(err, proto.ErrNotRegistered) {
		t.Fatalf("err %v, want 0007/0007", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v: not prompt", d)
	}
}

func TestNoBroker(t *testing.T) {
	s := testutil.StartNATS(t)
	c := newClient(t, testutil.Connect(t, s))
	_, err := c.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("x"))
	if !errors.Is(err, proto.ErrBrokerNotActive) {
		t.Fatalf("err %v, want 0215/0148", err)
	}
}

func TestBadServiceName(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	_, err := e.Client.Call(testutil.Context(t, 5*time.Second), "BAD.NAME/X/Y", nil)
	if !errors.Is(err, proto.ErrBadRequest) {
		t.Fatalf("err %v, want 0900/0001", err)
	}
}

func TestConversation(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService))
	ctx := testutil.Context(t, 10*time.Second)
	cv, first, err := e.Client.Open(ctx, demo.EchoService, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != "#1 one" {
		t.Fatalf("first reply %q", first)
	}
	for i, want := range []string{"#2 two", "#3 three"} {
		got, err := cv.Send(ctx, []byte([]string{"two", "three"}[i]))
		if err != nil || string(got) != want {
			t.Fatalf("send %d: %q %v, want %q", i, got, err, want)
		}
	}
	if err := cv.End(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cv.Send(ctx, []byte("after")); !errors.Is(err, proto.ErrAfterEOC) {
		t.Fatalf("send after EOC: %v, want 0020/0004", err)
	}
	// EOC by the replica ("bye").
	cv, _, err = e.Client.Open(ctx, demo.EchoService, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := cv.Send(ctx, []byte("bye"))
	if err != nil || string(got) != "#2 bye" {
		t.Fatalf("bye: %q %v", got, err)
	}
	if !errors.Is(cv.Ended(), proto.ErrEOC) {
		t.Fatalf("Ended() = %v after replica EOC", cv.Ended())
	}
	if _, err := cv.Send(ctx, []byte("more")); !errors.Is(err, proto.ErrAfterEOC) {
		t.Fatalf("send after replica EOC: %v", err)
	}
}

func TestConversationCancel(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	seen := make(chan error, 1)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		if _, err := c.Receive(ctx); err != nil {
			return err
		}
		_ = c.Reply([]byte("ok"))
		_, err := c.Receive(ctx)
		seen <- err
		return nil
	}, worker.WithService("T/CANCEL/X"))
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, "T/CANCEL/X", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cv.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-seen:
		if !errors.Is(err, proto.ErrCancelled) {
			t.Fatalf("handler saw %v, want 0003/0011", err)
		}
	case <-ctx.Done():
		t.Fatal("handler never saw the cancel")
	}
}

func TestQueueAtZeroReplicasDrainsWhenReplicaRegisters(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	registerAttach(t, e, demo.EchoService)
	ctx := testutil.Context(t, 20*time.Second)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprintf("m%d", i)
			got, err := e.Client.Call(ctx, demo.EchoService, []byte(want))
			if err == nil && string(got) != want {
				err = fmt.Errorf("got %q want %q", got, want)
			}
			errs <- err
		}(i)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := brokerStats(t, e, demo.EchoService); st.Pending != n {
			return fmt.Errorf("pending %d, want %d", st.Pending, n)
		}
		return nil
	})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithCapacity(4))
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error { // acks are asynchronous
		if st := brokerStats(t, e, demo.EchoService); st.TotalRequests != n || st.Pending != 0 {
			return fmt.Errorf("stats %+v: want %d queued in total, 0 pending", st, n)
		}
		return nil
	})
}

func TestNotificationWhenWorkWaits(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	registerAttach(t, e, demo.EchoService)
	sub, err := e.NC.SubscribeSync(proto.NotifyPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 10*time.Second)
	done := make(chan error, 1)
	go func() { _, err := e.Client.Call(ctx, demo.EchoService, []byte("x")); done <- err }()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no attach notification: %v", err)
	}
	n, err := proto.DecodeNotification(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if n.Service != demo.EchoService || n.Missing < 1 || n.Pending != 1 || n.Replicas != 0 || m.Subject != proto.NotifySubject(proto.MustService(demo.EchoService)) {
		t.Fatalf("notification %+v on %s", n, m.Subject)
	}
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDeadlineExpiresWhileQueued(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	registerAttach(t, e, demo.EchoService)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.Client.Call(ctx, demo.EchoService, []byte("late"))
	if !errors.Is(err, proto.ErrWaitTimeout) {
		t.Fatalf("err %v, want 0074/0074", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("deadline error after %v", d)
	}
	// A replica that registers later must not serve the expired request.
	served := make(chan string, 4)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		served <- string(m.Data)
		return c.Reply(m.Data)
	}, worker.WithService(demo.EchoService))
	got, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("fresh"))
	if err != nil || string(got) != "fresh" {
		t.Fatalf("fresh call: %q %v", got, err)
	}
	if s := <-served; s != "fresh" {
		t.Fatalf("replica served %q: an expired request was served late", s)
	}
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if st := brokerStats(t, e, demo.EchoService); st.Pending != 0 {
			return fmt.Errorf("expired request still queued: %+v", st)
		}
		return nil
	})
}

func TestPayloadTooBig(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService))
	big := make([]byte, e.NC.MaxPayload()+1)
	_, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, big)
	if !errors.Is(err, proto.ErrPayloadTooBig) {
		t.Fatalf("err %v, want 0900/0002", err)
	}
	// The system keeps working.
	if _, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("ok")); err != nil {
		t.Fatal(err)
	}
}

func TestHandlerErrorIsCoded(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		if _, err := c.Receive(ctx); err != nil {
			return err
		}
		return errors.New("disk full")
	}, worker.WithService("T/ERR/X"))
	_, err := e.Client.Call(testutil.Context(t, 5*time.Second), "T/ERR/X", nil)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeServiceError || pe.Description != "disk full" {
		t.Fatalf("err %#v, want 0900/0003 disk full", err)
	}
}

func TestMalformedMessagesGetErrors(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService), worker.WithReplicaID("r1"))
	svc := proto.MustService(demo.EchoService)
	cases := []struct {
		name, subject string
		hdr           nats.Header
		want          proto.Code
	}{
		{"bad op on warm", proto.WarmSubject(svc), nats.Header{proto.HdrOp: {"FLY"}}, proto.CodeBadRequest},
		{"OLD on warm", proto.WarmSubject(svc), nats.Header{proto.HdrOp: {"OLD"}}, proto.CodeBadRequest},
		{"bad deadline on warm", proto.WarmSubject(svc), nats.Header{proto.HdrDeadline: {"soon"}}, proto.CodeBadRequest},
		{"bad timeout on broker", proto.CallSubject(svc), nats.Header{proto.HdrTimeout: {"-4"}}, proto.CodeBadRequest},
		{"OLD without conv", proto.ReplicaSubject("r1"), nats.Header{proto.HdrOp: {"OLD"}}, proto.CodeBadRequest},
		{"OLD unknown conv", proto.ReplicaSubject("r1"), nats.Header{proto.HdrOp: {"OLD"}, proto.HdrConv: {"nope"}}, proto.CodeNoConversation},
		{"bad control", proto.ControlSubject("r1"), nats.Header{proto.HdrOp: {"REBOOT"}}, proto.CodeBadRequest},
		{"short broker subject", "muster.call.X", nil, proto.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &nats.Msg{Subject: tc.subject, Header: tc.hdr, Data: []byte("x")}
			r, err := e.NC.RequestMsg(m, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got := proto.ErrorFromHeader(r.Header); got == nil || got.Code != tc.want {
				t.Fatalf("error %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := e.Client.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("still here")); err != nil {
		t.Fatal(err)
	}
}

// registerAttach makes svc attachable, as an attach manager's record does.
func registerAttach(t *testing.T, e *harness.Env, svc string) {
	t.Helper()
	harness.RegisterAttach(t, e, "test-attach", svc)
}

func brokerStats(t *testing.T, e *harness.Env, svc string) proto.ServiceStats {
	t.Helper()
	for _, s := range e.Broker.Stats(context.Background()) {
		if s.Service == svc {
			return s
		}
	}
	return proto.ServiceStats{Service: svc}
}

// A conversation's messages take their replies on the conversation's own
// token while their exchanges succeed. After one that timed out, its late
// reply must not be taken for the reply to the next message.
func TestLateReplyIsNotTheNextOne(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	release, replied := make(chan struct{}), make(chan struct{})
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return nil
			}
			if string(m.Data) == "late" {
				<-release
			}
			if err := c.Reply(m.Data); err != nil {
				return err
			}
			if string(m.Data) == "late" {
				close(replied)
			}
		}
	}, worker.WithService("T/LATE/X"))
	ctx := testutil.Context(t, 10*time.Second)
	cv, _, err := e.Client.Open(ctx, "T/LATE/X", []byte("open"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cv.Send(ctx, []byte("before")); err != nil || string(got) != "before" {
		t.Fatalf("before: %q %v", got, err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = cv.Send(short, []byte("late"))
	cancel()
	if !errors.Is(err, proto.ErrWaitTimeout) {
		t.Fatalf("late: %v, want 0074/0074 (no reply within the deadline)", err)
	}
	close(release)
	<-replied // the late reply is on its way, ahead of the next one
	for _, want := range []string{"next", "after"} {
		if got, err := cv.Send(ctx, []byte(want)); err != nil || string(got) != want {
			t.Fatalf("%s: %q %v", want, got, err)
		}
	}
	if err := cv.End(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBareCallCancelledAtItsDeadline: the Go client sends a warm call
// bare (no deadline header), so when its deadline passes it cancels the
// call at the replica: the handler's context ends, and the handler saw no
// deadline of its own. The deadline is the context's, or, for a context
// without one, the client's default timeout (WithTimeout), which a pooled
// timer keeps.
func TestBareCallCancelledAtItsDeadline(t *testing.T) {
	for _, byCtx := range []bool{true, false} {
		t.Run(map[bool]string{true: "context deadline", false: "client default timeout"}[byCtx], func(t *testing.T) {
			e := harness.Start(t, broker.Config{})
			const svc = "T/BARE/DL"
			ended := make(chan error, 1)
			headers := make(chan int, 1)
			e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
				m, err := c.Receive(ctx)
				if err != nil {
					return err
				}
				headers <- len(m.Header)
				select {
				case <-ctx.Done():
					ended <- ctx.Err()
				case <-time.After(10 * time.Second):
					ended <- errors.New("handler not cancelled within 10s")
				}
				return ctx.Err()
			}, worker.WithService(svc))
			ctx, c := context.Background(), e.Client
			if byCtx {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
			} else {
				var err error
				if c, err = client.New(e.NC, client.WithTimeout(300*time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			start := time.Now()
			_, err := c.Call(ctx, svc, []byte("x"))
			if !errors.Is(err, proto.ErrWaitTimeout) {
				t.Fatalf("call past its deadline: %v, want 0074", err)
			}
			if took := time.Since(start); took < 300*time.Millisecond || took > 5*time.Second {
				t.Fatalf("call ended %v after it started; want at its deadline, 300ms", took)
			}
			if n := <-headers; n != 0 {
				t.Fatalf("warm call arrived with %d headers, want a bare request", n)
			}
			if err := <-ended; !errors.Is(err, context.Canceled) {
				t.Fatalf("handler: %v, want its context cancelled", err)
			}
		})
	}
}

// TestQueuedCallKeepsTheDefaultTimeout: a call whose context has no
// deadline takes the client's default timeout (WithTimeout) to the broker
// as its Muster-Deadline, and ends with 0074/0074 at it while queued.
func TestQueuedCallKeepsTheDefaultTimeout(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/DEFAULT/DL"
	harness.RegisterAttach(t, e, "dl-attach", svc) // attachable, never starts anything
	spy, err := e.NC.SubscribeSync(proto.QueueSubject(proto.MustService(svc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(e.NC, client.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Call(context.Background(), svc, []byte("x"))
	if !errors.Is(err, proto.ErrWaitTimeout) {
		t.Fatalf("queued call past its deadline: %v, want 0074", err)
	}
	if took := time.Since(start); took < time.Second || took > 5*time.Second {
		t.Fatalf("call ended %v after it started; want at its deadline, 1s", took)
	}
	q, err := spy.NextMsg(time.Second)
	if err != nil {
		t.Fatalf("no queued copy seen: %v", err)
	}
	dl, err := proto.ParseDeadline(q.Header, start)
	if err != nil || dl.Before(start.Add(900*time.Millisecond)) || dl.After(start.Add(1500*time.Millisecond)) {
		t.Fatalf("queued copy's deadline %v (%v); want about 1s after the call started", dl.Sub(start), err)
	}
}

// TestConversationKeepsTheDefaultTimeout: Open, Send and End with a
// context that has no deadline get the client's default timeout (a pooled
// timer, no derived context): a NEW queued with no replica to take it
// carries that deadline and ends with 0074 at it; a Send the handler is
// slow to answer ends with 0074 at it and leaves the conversation open;
// the next Send goes with headers and a fresh reply subject, its
// Muster-Deadline the default timeout from then.
func TestConversationKeepsTheDefaultTimeout(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const timeout = 400 * time.Millisecond
	const queuedSvc = "T/DEFAULT/CONVQ"
	harness.RegisterAttach(t, e, "dlc-attach", queuedSvc) // attachable, never starts anything
	dls := make(chan time.Time, 8)
	slowDone := make(chan struct{})
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return nil
			}
			dls <- m.Deadline
			if string(m.Data) == "slow" {
				time.Sleep(3 * timeout)
			}
			if err := c.Reply(m.Data); err != nil {
				return err
			}
			if string(m.Data) == "slow" {
				close(slowDone)
			}
		}
	}, worker.WithService("T/DEFAULT/CONV"), worker.WithReplicaID("dlc1"), worker.WithCapacity(2))
	c, err := client.New(e.NC, client.WithTimeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	start := time.Now()
	if _, _, err := c.Open(ctx, queuedSvc, []byte("x")); !errors.Is(err, proto.ErrWaitTimeout) {
		t.Fatalf("queued NEW past its deadline: %v, want 0074", err)
	}
	if took := time.Since(start); took < timeout || took > timeout+2*time.Second {
		t.Fatalf("queued NEW ended %v after it started; want at its deadline, %v", took, timeout)
	}
	start = time.Now()
	cv, _, err := c.Open(ctx, "T/DEFAULT/CONV", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if dl := <-dls; dl.Before(start.Add(timeout-100*time.Millisecond)) || dl.After(start.Add(timeout+time.Second)) {
		t.Fatalf("NEW's deadline %v after the start, want about %v", dl.Sub(start), timeout)
	}
	start = time.Now()
	if _, err := cv.Send(ctx, []byte("slow")); !errors.Is(err, proto.ErrWaitTimeout) {
		t.Fatalf("slow Send: %v, want 0074", err)
	}
	if took := time.Since(start); took < timeout || took > 2*timeout+time.Second {
		t.Fatalf("slow Send ended %v after it started; want at its deadline, %v", took, timeout)
	}
	<-dls      // the slow message's (bare: zero)
	<-slowDone // its late reply went out: the replica takes the next message now
	start = time.Now()
	if got, err := cv.Send(ctx, []byte("next")); err != nil || string(got) != "next" {
		t.Fatalf("Send after a timed-out one: %q, %v; want the conversation still open", got, err)
	}
	if dl := <-dls; dl.Before(start.Add(timeout-100*time.Millisecond)) || dl.After(start.Add(4*timeout+time.Second)) {
		t.Fatalf("deadline of the Send after a timeout: %v after it started, want about %v", dl.Sub(start), timeout)
	}
	if err := cv.End(ctx); err != nil {
		t.Fatal(err)
	}
}
