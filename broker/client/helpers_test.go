package client_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/worker"
)

func newClient(t *testing.T, nc *nats.Conn) *client.Client {
	t.Helper()
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echoConv answers every message of a call or conversation with its
// payload until the conversation ends.
func echoConv(ctx context.Context, c *worker.Conv) error {
	for {
		m, err := c.Receive(ctx)
		if err != nil {
			return nil
		}
		if err := c.Reply(m.Data); err != nil {
			return err
		}
	}
}
