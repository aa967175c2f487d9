package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// TestStepsEnds: every way a conversation served with Steps ends, as its
// client and its handler see it. "fail" makes the step return a coded
// error, "panic" panics, anything else is echoed; a call is one step.
func TestStepsEnds(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/STEPS/ENDS"
	handlerErr := make(chan error, 8)
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		err := c.Steps(ctx, func(ctx context.Context, m *worker.Message) ([]byte, bool, error) {
			switch string(m.Data) {
			case "fail":
				return nil, false, proto.Errorf(proto.Code{Class: 900, Number: 42}, "step refused")
			case "panic":
				panic("step panicked")
			}
			return m.Data, false, nil
		})
		handlerErr <- err
		return err
	}, worker.WithService(svc), worker.WithCapacity(4), worker.WithConvTimeout(300*time.Millisecond))
	ctx := testutil.Context(t, 20*time.Second)
	handlerGot := func(want error) {
		t.Helper()
		select {
		case err := <-handlerErr:
			if !errors.Is(err, want) && (want != nil || err != nil) {
				t.Fatalf("Steps returned %v, want %v", err, want)
			}
		case <-ctx.Done():
			t.Fatal("Steps did not return")
		}
	}
	open := func() func(string) ([]byte, error) {
		t.Helper()
		cv, _, err := e.Client.Open(ctx, svc, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ { // some of them run inline
			if got, err := cv.Send(ctx, []byte("x")); err != nil || string(got) != "x" {
				t.Fatalf("echo: %q, %v", got, err)
			}
		}
		return func(s string) ([]byte, error) {
			if s == "" {
				return nil, cv.End(ctx)
			}
			return cv.Send(ctx, []byte(s))
		}
	}

	t.Run("step error", func(t *testing.T) {
		send := open()
		_, err := send("fail")
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Code != (proto.Code{Class: 900, Number: 42}) {
			t.Fatalf("client got %v, want the step's 0900/0042", err)
		}
		handlerGot(pe)
		if _, err := send("x"); err == nil {
			t.Fatal("the conversation went on after the step's error")
		}
	})
	t.Run("panic", func(t *testing.T) {
		send := open()
		if _, err := send("panic"); !errors.Is(err, proto.ErrServiceError) {
			t.Fatalf("client got %v, want 0900/0003", err)
		}
		handlerGot(proto.ErrServiceError)
	})
	t.Run("client ends it", func(t *testing.T) {
		send := open()
		if _, err := send(""); err != nil {
			t.Fatal(err)
		}
		handlerGot(nil)
	})
	t.Run("conversation timeout after inline steps", func(t *testing.T) {
		send := open()
		handlerGot(proto.ErrConvTimeout) // nothing sent for 300 ms after the last reply
		if _, err := send("x"); !errors.Is(err, proto.ErrConvTimeout) {
			t.Fatalf("send after the timeout: %v, want 0003/0073", err)
		}
	})
	t.Run("call", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			got, err := e.Client.Call(ctx, svc, []byte(fmt.Sprint(i)))
			if err != nil || string(got) != fmt.Sprint(i) {
				t.Fatalf("call: %q, %v", got, err)
			}
			handlerGot(nil)
		}
	})
}
