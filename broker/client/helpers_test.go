package client_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
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
