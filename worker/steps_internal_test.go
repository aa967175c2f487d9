package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// stepReplica starts a replica of svc whose handler serves with Steps:
// each message is answered "<n>:<data>" (n counts the conversation's
// messages: its state lives in the step's closure), "bye" ends it, and
// "slow" waits until release is closed or the step's ctx ends.
func stepReplica(t *testing.T, nc *nats.Conn, svc proto.Service, release <-chan struct{}, opts ...Option) *replica {
	t.Helper()
	r := testReplica(t, nc, svc, func(ctx context.Context, c *Conv) error {
		n := 0
		var busy atomic.Bool
		return c.Steps(ctx, func(ctx context.Context, m *Message) ([]byte, bool, error) {
			if !busy.CompareAndSwap(false, true) {
				t.Errorf("two steps of conversation %s ran at once", c.ID())
			}
			defer busy.Store(false)
			n++
			if string(m.Data) == "slow" {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, false, ctx.Err()
				}
			}
			return []byte(strconv.Itoa(n) + ":" + string(m.Data)), string(m.Data) == "bye", nil
		})
	}, append([]Option{WithCapacity(8)}, opts...)...)
	startTestReplica(t, r)
	return r
}

// stepClient is a Go client on s whose calls wait up to timeout.
func stepClient(t *testing.T, s *server.Server, timeout time.Duration) *client.Client {
	t.Helper()
	cl, err := client.New(testutil.Connect(t, s), client.WithTimeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// waitInReceive waits until the handler of cv's conversation on r waits
// in Receive (inside Steps): only then is an OLD's step run inline.
func waitInReceive(t *testing.T, r *replica, cv *client.Conv) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		r.mu.Lock()
		c := r.convs[cv.ID()]
		r.mu.Unlock()
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.waitSince.IsZero() {
			return errors.New("handler not waiting in Receive yet")
		}
		return nil
	})
}

// After the opening message, a conversation served with Steps has its
// OLDs' steps run by the private reader (no hand-over to the handler's
// goroutine), with the conversation's state kept from step to step.
func TestStepsRunInline(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/STEPS/INLINE")
	r := stepReplica(t, testutil.Connect(t, s), svc, nil)
	cl := stepClient(t, s, 5*time.Second)
	ctx := testutil.Context(t, 10*time.Second)
	cv, first, err := cl.Open(ctx, svc.String(), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != "1:a" {
		t.Fatalf("first reply %q, want 1:a", first)
	}
	for i := 2; i <= 6; i++ {
		got, err := cv.Send(ctx, []byte("m"))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%d:m", i); string(got) != want {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	got, err := cv.Send(ctx, []byte("bye"))
	if err != nil || string(got) != "7:bye" {
		t.Fatalf("bye: %q, %v", got, err)
	}
	if !errors.Is(cv.Ended(), proto.ErrEOC) {
		t.Fatalf("Ended() = %v after the step ended it, want EOC", cv.Ended())
	}
	if _, err := cv.Send(ctx, []byte("late")); !errors.Is(err, proto.ErrAfterEOC) {
		t.Fatalf("send after the end: %v, want 0003/0074-like after-EOC error", err)
	}
	// The OLDs whose step ran while the handler waited in Receive: at
	// least all but the first (which may come before Steps waits).
	if n := r.privSteps.Load(); n < 5 {
		t.Fatalf("%d of 6 OLDs ran inline, want 5 or more", n)
	}
	// The slot is free again, and the handler's goroutine has returned.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.active != 0 || r.serving.n != 0 {
			return fmt.Errorf("active %d, serving %d after the end", r.active, r.serving.n)
		}
		return nil
	})
}

// A step that takes its time holds up nothing else of its replica: the
// stall timer starts a new private reader, which answers another
// conversation's OLDs and the replica's PINGs meanwhile; the slow step's
// reply still reaches its caller, and the old reader exits.
func TestSlowStepHandsOverThePrivateSubject(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/STEPS/SLOW")
	release := make(chan struct{})
	r := stepReplica(t, testutil.Connect(t, s), svc, release)
	cl := stepClient(t, s, 10*time.Second)
	ctx := testutil.Context(t, 15*time.Second)
	slow, _, err := cl.Open(ctx, svc.String(), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := cl.Open(ctx, svc.String(), []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	// Both handlers wait in Receive before the OLDs go (else they would
	// go to Receive, not to an inline step).
	waitInReceive(t, r, slow)
	waitInReceive(t, r, other)
	slowReply := make(chan error, 1)
	go func() {
		got, err := slow.Send(ctx, []byte("slow"))
		if err == nil && string(got) != "2:slow" {
			err = fmt.Errorf("slow reply %q", got)
		}
		slowReply <- err
	}()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if r.privStalls.Load() == 0 {
			return errors.New("no new reader started while the step is slow")
		}
		return nil
	})
	for i := 2; i <= 4; i++ {
		got, err := other.Send(ctx, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%d:x", i); string(got) != want {
			t.Fatalf("other conversation: %q, want %q", got, want)
		}
	}
	nc := testutil.Connect(t, s)
	ping := nats.NewMsg(proto.ReplicaSubject(r.cfg.replicaID))
	ping.Header.Set(proto.HdrOp, proto.OpPing)
	if _, err := nc.RequestMsg(ping, 2*time.Second); err != nil {
		t.Fatalf("PING while a step is slow: %v", err)
	}
	select {
	case err := <-slowReply:
		t.Fatalf("slow step answered before its release: %v", err)
	default:
	}
	close(release)
	if err := <-slowReply; err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Send(ctx, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Send(ctx, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	// Exactly one reader is left: the old one exited after its step. The
	// pool is the workers, the forwarder, the dispatcher and one reader.
	want := r.cfg.capacity + 3
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.pool.n != want {
			return fmt.Errorf("%d pool goroutines, want %d", r.pool.n, want)
		}
		return nil
	})
}

// A CANCEL while a step runs inline cancels the step's context; Steps
// returns only after that step has returned (the slot is not free while
// the step still runs).
func TestCancelDuringInlineStep(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/STEPS/CANCEL")
	var stepDone, servedDone atomic.Int64
	handlerErr := make(chan error, 1)
	r := testReplica(t, testutil.Connect(t, s), svc, func(ctx context.Context, c *Conv) error {
		err := c.Steps(ctx, func(ctx context.Context, m *Message) ([]byte, bool, error) {
			if string(m.Data) != "wait" {
				return m.Data, false, nil
			}
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // cleaning up after the cancel
			stepDone.Store(time.Now().UnixNano())
			return nil, false, ctx.Err()
		})
		servedDone.Store(time.Now().UnixNano())
		handlerErr <- err
		return err
	})
	startTestReplica(t, r)
	cl := stepClient(t, s, 10*time.Second)
	ctx := testutil.Context(t, 15*time.Second)
	cv, _, err := cl.Open(ctx, svc.String(), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if r.privSteps.Load() == 0 {
			if _, err := cv.Send(ctx, []byte("x")); err != nil { // until one runs inline
				return err
			}
			return errors.New("no inline step yet")
		}
		return nil
	})
	sent := make(chan error, 1)
	go func() { _, err := cv.Send(ctx, []byte("wait")); sent <- err }()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if r.privSince.Load() == 0 && r.privStalls.Load() == 0 {
			return errors.New("the step is not running yet")
		}
		return nil
	})
	if err := cv.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-handlerErr; !errors.Is(err, proto.ErrCancelled) {
		t.Fatalf("Steps returned %v, want 0003/0011", err)
	}
	if s, h := stepDone.Load(), servedDone.Load(); s == 0 || h < s {
		t.Fatalf("Steps returned before its step did (step %d, Steps %d)", s, h)
	}
	select { // the cancelled message gets no reply: the client ends its Send
	case err := <-sent:
		if !errors.Is(err, proto.ErrCancelled) {
			t.Fatalf("pending Send: %v, want 0003/0011", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending Send still waiting 5s after Cancel")
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.active != 0 {
			return fmt.Errorf("slot still taken after the cancel")
		}
		return nil
	})
}

// An OLD that comes while the conversation's last step still runs inline
// (its client gave up waiting for the answer and sent the next message)
// waits for that step and then runs, with its own answer: it does not go
// to the handler's Receive, where a second step would run at once and the
// answers would go to each other's messages.
func TestOldDuringInlineStepWaitsForIt(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/STEPS/AHEAD")
	release := make(chan struct{})
	r := stepReplica(t, testutil.Connect(t, s), svc, release)
	cl := stepClient(t, s, 10*time.Second)
	ctx := testutil.Context(t, 15*time.Second)
	cv, _, err := cl.Open(ctx, svc.String(), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	waitInReceive(t, r, cv)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := cv.Send(short, []byte("slow")); !errors.Is(err, proto.ErrWaitTimeout) {
		t.Fatalf("slow message: %v, want the client's wait timeout", err)
	}
	cancel()
	if r.privSteps.Load() != 1 {
		t.Fatalf("%d steps ran inline, want the slow one", r.privSteps.Load())
	}
	next := make(chan string, 1)
	go func() {
		got, err := cv.Send(ctx, []byte("x"))
		if err != nil {
			next <- err.Error()
			return
		}
		next <- string(got)
	}()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		r.mu.Lock()
		c := r.convs[cv.ID()]
		r.mu.Unlock()
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.stepNext == nil {
			return errors.New("the next OLD is not held yet")
		}
		return nil
	})
	close(release)
	if got := <-next; got != "3:x" {
		t.Fatalf("the message sent during the slow step got %q, want 3:x (its own answer, after the slow one's)", got)
	}
	if got, err := cv.Send(ctx, []byte("y")); err != nil || string(got) != "4:y" {
		t.Fatalf("the next message: %q, %v, want 4:y", got, err)
	}
}
