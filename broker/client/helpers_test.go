package client_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
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

// byeSteps echoes each message with Conv.Steps and ends the conversation
// with "bye".
func byeSteps(ctx context.Context, c *worker.Conv) error {
	return c.Steps(ctx, func(_ context.Context, m *worker.Message) ([]byte, bool, error) {
		return m.Data, string(m.Data) == "bye", nil
	})
}

// olderReplica is a replica of svc written to an older protocol, in raw
// NATS: it answers NEW on the warm subject (queue group muster) with
// Muster-Replica and Muster-Conv only (no Muster-Bare, no bare replies,
// no NEW subject), and echoes every message on its private subject.
func olderReplica(t *testing.T, e *harness.Env, svc, id string) {
	t.Helper()
	nc := testutil.Connect(t, e.Server)
	if _, err := nc.QueueSubscribe(proto.WarmSubject(proto.MustService(svc)), proto.WarmQueue, func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(proto.HdrReplica, id)
		r.Header.Set(proto.HdrConv, "c1")
		r.Data = m.Data
		_ = nc.PublishMsg(r)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(proto.ReplicaSubject(id), func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
