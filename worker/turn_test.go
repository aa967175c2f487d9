package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// The private subject's goroutine waits for a handler's reply to the OLD
// it handed over before it takes the next message (turn.go), but only
// briefly: a handler that takes its time does not hold up the messages of
// the replica's other conversations. The slow handler is released only
// after the other conversation has exchanged its messages, so without the
// bound they would wait for it and miss their deadline.
func TestSlowConversationDoesNotHoldUpOthers(t *testing.T) {
	s := testutil.StartNATS(t)
	const svc = "T/TURN/X"
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	entered := make(chan struct{})
	done := runReplica(t, context.Background(), func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return nil
			}
			if string(m.Data) == "slow" {
				close(entered)
				<-release
			}
			if err := c.Reply(m.Data); err != nil {
				return err
			}
		}
	}, worker.WithConn(testutil.Connect(t, s)), worker.WithService(svc), worker.WithReplicaID("turn1"), worker.WithCapacity(2))
	cl, err := client.New(testutil.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	ctx := testutil.Context(t, 20*time.Second)
	slowConv, _, err := cl.Open(ctx, svc, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := cl.Open(ctx, svc, []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		_, err := slowConv.Send(ctx, []byte("slow"))
		slow <- err
	}()
	<-entered
	for i := 0; i < 20; i++ {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		want := fmt.Sprint(i)
		got, err := other.Send(mctx, []byte(want))
		cancel()
		if err != nil || string(got) != want {
			t.Fatalf("message %d behind a slow one: %q %v", i, got, err)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow message was answered before it was released: %v", err)
	default:
	}
	free()
	if err := <-slow; err != nil {
		t.Fatalf("slow message: %v", err)
	}
	for _, cv := range []*client.Conv{slowConv, other} {
		if err := cv.End(ctx); err != nil {
			t.Fatal(err)
		}
	}
	control(t, testutil.Connect(t, s), "turn1", proto.OpImmed)
	waitRun(t, done, 10*time.Second)
}
