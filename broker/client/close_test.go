package client_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
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

// holdingReplica starts a replica of svc whose handler answers the first
// message of each conversation, then waits for the next one (or, for a
// call, never replies) until the conversation ends. took receives once per
// request the handler has.
func holdingReplica(e *harness.Env, svc string, took chan<- struct{}, opts ...worker.Option) {
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		took <- struct{}{}
		if string(m.Data) == "hold" {
			// Never answered (a second Receive would end a call at once
			// with ErrNotReplied): hold it until the replica stops.
			<-ctx.Done()
			return ctx.Err()
		}
		if err := c.Reply(m.Data); err != nil {
			return err
		}
		_, err = c.Receive(ctx) // until the conversation ends
		return err
	}, append([]worker.Option{worker.WithService(svc), worker.WithCapacity(16), worker.WithGrace(200 * time.Millisecond)}, opts...)...)
}

// TestCloseFailsCallsInFlight: a Call waiting on a slow replica returns
// soon after Close with an error that is ErrClosed (and 0215/0148); so do
// conversations opened on the client, and later calls.
func TestCloseFailsCallsInFlight(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	took := make(chan struct{}, 16)
	holdingReplica(e, "T/SLOW/X", took)
	c := newClient(t, testutil.Connect(t, e.Server))
	ctx := testutil.Context(t, 30*time.Second)

	cv, _, err := c.Open(ctx, "T/SLOW/X", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	<-took
	done := make(chan error, 1)
	go func() { _, err := c.Call(ctx, "T/SLOW/X", []byte("hold")); done <- err }()
	select {
	case <-took: // the replica has the call and will never answer it
	case <-ctx.Done():
		t.Fatal("the replica never got the call")
	}

	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	var callErr error
	select {
	case callErr = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Call still blocked 10s after Close")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Call returned %v after Close; want promptly", d)
	}
	for name, err := range map[string]error{
		"call in flight": callErr,
		"conv Ended":     cv.Ended(),
		"conv Send":      func() error { _, err := cv.Send(ctx, []byte("x")); return err }(),
		"call after":     func() error { _, err := c.Call(ctx, "T/SLOW/X", nil); return err }(),
		"open after":     func() error { _, _, err := c.Open(ctx, "T/SLOW/X", nil); return err }(),
	} {
		if !errors.Is(err, client.ErrClosed) || !errors.Is(err, proto.ErrBrokerNotActive) {
			t.Errorf("%s: %v, want ErrClosed and 0215/0148", name, err)
		}
	}
	if n := c.Waiters(); n != 0 {
		t.Errorf("%d waiters after Close", n)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestEndedConversationsLeaveNoWaiter: conversations the replica ends
// (here by its conversation timeout) while the client is not waiting
// release their waiters, and Ended still reports why.
func TestEndedConversationsLeaveNoWaiter(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	took := make(chan struct{}, 16)
	holdingReplica(e, "T/TIMEOUT/X", took, worker.WithConvTimeout(300*time.Millisecond))
	c := newClient(t, testutil.Connect(t, e.Server))
	ctx := testutil.Context(t, 30*time.Second)
	var convs []*client.Conv
	for i := 0; i < 10; i++ {
		cv, _, err := c.Open(ctx, "T/TIMEOUT/X", []byte("hi"))
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, cv)
	}
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := c.Waiters(); n != 0 {
			return fmt.Errorf("%d waiters left", n)
		}
		return nil
	})
	for _, cv := range convs { // keeps them reachable: no cleanup did this
		if err := cv.Ended(); !errors.Is(err, proto.ErrConvTimeout) {
			t.Errorf("conversation %s: Ended() = %v, want 0003/0073", cv.ID(), err)
		}
	}
}

// TestAbandonedConversationsLeaveNoWaiter: conversations dropped without
// End or Cancel, still open at the replica, release their waiters once
// the garbage collector finds them.
func TestAbandonedConversationsLeaveNoWaiter(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	took := make(chan struct{}, 16)
	holdingReplica(e, "T/ABANDON/X", took)
	c := newClient(t, testutil.Connect(t, e.Server))
	ctx := testutil.Context(t, 30*time.Second)
	func() {
		for i := 0; i < 10; i++ {
			if _, _, err := c.Open(ctx, "T/ABANDON/X", []byte("hi")); err != nil {
				t.Fatal(err)
			}
		}
	}()
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		runtime.GC()
		if n := c.Waiters(); n != 0 {
			return fmt.Errorf("%d waiters left", n)
		}
		return nil
	})
}

// TestTransportErrorKeepsCause: a call on a closed NATS connection is
// 0215/0148 and errors.Is sees nats.ErrConnectionClosed through it.
func TestTransportErrorKeepsCause(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	e.StartReplica(demo.Echo, worker.WithService(demo.EchoService))
	nc := testutil.Connect(t, e.Server)
	c := newClient(t, nc)
	nc.Close()
	_, err := c.Call(testutil.Context(t, 5*time.Second), demo.EchoService, []byte("x"))
	if !errors.Is(err, proto.ErrBrokerNotActive) || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("err %v, want 0215/0148 caused by nats.ErrConnectionClosed", err)
	}
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Description != nats.ErrConnectionClosed.Error() {
		t.Fatalf("err %#v: description should be the transport error", err)
	}
}
