package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/worker"
)

// A replica that answers calls of DEMO/UPPER/CASE with their payload in
// upper case. An attach manager sets MUSTER_URL, MUSTER_SERVICE and the
// rest, so worker.Main(h) is the whole main of most workers; Run takes the
// same settings as options and returns instead of exiting.
func ExampleRun() {
	h := worker.HandlerFunc(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx) // a call is a conversation of one message
		if err != nil {
			return err
		}
		return c.Reply(bytes.ToUpper(m.Data))
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err := worker.Run(ctx, h,
		worker.WithURL("nats://127.0.0.1:4222"),
		worker.WithService("DEMO/UPPER/CASE"),
		worker.WithCapacity(4),                // four calls at once
		worker.WithIdleTimeout(5*time.Minute), // exit when idle
	)
	if err != nil { // it did not start: errors.Is(err, worker.ErrConfig), no server …
		log.Fatal(err)
	}
}

// A conversation handler: Receive in a loop and answer each message with
// Reply, until the client ends the conversation (Receive returns
// proto.ErrEOC) or the handler ends it with ReplyEnd.
func ExampleConv_Receive() {
	h := func(ctx context.Context, c *worker.Conv) error {
		total := 0
		for {
			m, err := c.Receive(ctx)
			if errors.Is(err, proto.ErrEOC) {
				return nil // the client said goodbye
			}
			if err != nil {
				return err // cancelled, timed out (CONV-NONACT) or the replica stops
			}
			total += len(m.Data)
			answer := []byte(fmt.Sprintf("message %d, %d bytes so far", m.Seq, total))
			if string(m.Data) == "bye" {
				return c.ReplyEnd(answer) // the last answer ends the conversation
			}
			if err := c.Reply(answer); err != nil {
				return err
			}
		}
	}
	worker.Main(worker.HandlerFunc(h), worker.WithService("DEMO/COUNT/BYTES"))
}

// The same conversation served one message at a time: the step answers
// each message (its state, total, lives in the closure), says whether its
// answer ends the conversation, or returns an error that ends it. The
// replica runs each step on the goroutine that received the message,
// which makes conversations faster than a Receive loop.
func ExampleConv_Steps() {
	h := func(ctx context.Context, c *worker.Conv) error {
		total := 0
		return c.Steps(ctx, func(ctx context.Context, m *worker.Message) ([]byte, bool, error) {
			total += len(m.Data)
			answer := []byte(fmt.Sprintf("message %d, %d bytes so far", m.Seq, total))
			return answer, string(m.Data) == "bye", nil
		})
	}
	worker.Main(worker.HandlerFunc(h), worker.WithService("DEMO/COUNT/BYTES"))
}
