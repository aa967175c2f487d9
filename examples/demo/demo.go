// Package demo holds the demo services built into the muster binary and
// used by the examples and tests: an echo that counts the messages of its
// conversation, and a slow service for watching queueing.
package demo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/worker"
)

// EchoService is the echo demo's service name.
const EchoService = "DEMO/ECHO/ECHO"

// Echo answers a call with its payload, and each message of a conversation
// with "#N payload", N counting the conversation's messages. The message
// "bye" ends the conversation from the replica's side.
func Echo(ctx context.Context, c *worker.Conv) error {
	for {
		m, err := c.Receive(ctx)
		if err != nil {
			return normalEnd(err)
		}
		if c.IsCall() {
			return c.Reply(m.Data)
		}
		out := []byte(fmt.Sprintf("#%d %s", m.Seq, m.Data))
		if strings.TrimSpace(string(m.Data)) == "bye" {
			return c.ReplyEnd(out)
		}
		if err := c.Reply(out); err != nil {
			return err
		}
	}
}

// Sleep waits for the duration its payload names ("250ms"; default 1s)
// before it answers, so queueing and timeouts can be watched.
func Sleep(ctx context.Context, c *worker.Conv) error {
	m, err := c.Receive(ctx)
	if err != nil {
		return normalEnd(err)
	}
	d, perr := time.ParseDuration(strings.TrimSpace(string(m.Data)))
	if perr != nil {
		d = time.Second
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return ctx.Err()
	}
	return c.ReplyEnd([]byte("slept " + d.String()))
}

// normalEnd turns the client's EOC or cancel into a clean return.
func normalEnd(err error) error {
	if errors.Is(err, proto.ErrEOC) || errors.Is(err, proto.ErrCancelled) {
		return nil
	}
	return err
}

// SleepService is the sleep demo's service name.
const SleepService = "DEMO/SLEEP/SLEEP"
