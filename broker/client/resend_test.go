package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// TestResendToNoBrokerKeepsAQueuedCall: the only broker queues a request
// and dies before it answers ("queued" lost). The request waits in the
// stream, and the service's replica (busy at that moment) takes it from
// the queue as soon as it is free: the caller must get its reply, as it did
// before callers resent to the brokers. A resend that finds no broker
// (no responders) is no verdict: the first copy may be queued.
func TestResendToNoBrokerKeepsAQueuedCall(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/ONCE/NOBROKER"
	busy, release := make(chan struct{}), make(chan struct{})
	e.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if string(m.Data) == "block" {
			close(busy)
			<-release
		}
		return c.Reply(m.Data)
	}, worker.WithService(svc), worker.WithCapacity(1))

	// The replica is busy with a slow call.
	blocked := make(chan error, 1)
	go func() {
		_, err := e.Client.Call(testutil.Context(t, 30*time.Second), svc, []byte("block"))
		blocked <- err
	}()
	select {
	case <-busy:
	case err := <-blocked:
		t.Fatalf("blocking call ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the replica did not take the blocking call")
	}

	// The broker is gone; in its place a "broker" that stores the request
	// in the queue stream, as the broker does, and dies before it answers.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Broker.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	sink := testutil.Connect(t, e.Server)
	js, err := jetstream.New(sink)
	if err != nil {
		t.Fatal(err)
	}
	stored := make(chan error, 1)
	var sub *nats.Subscription
	sub, err = sink.QueueSubscribe(proto.CallSubject(proto.MustService(svc)), proto.BrokerQueue, func(m *nats.Msg) {
		_ = sub.Unsubscribe() // it dies with the request
		q := nats.NewMsg(proto.QueueSubject(proto.MustService(svc)))
		q.Data = m.Data
		for k, v := range m.Header {
			q.Header[k] = v
		}
		q.Header.Set(proto.HdrReply, m.Reply)
		q.Header.Set(jetstream.MsgIDHeader, m.Reply)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.PublishMsg(ctx, q)
		stored <- err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}

	type result struct {
		reply []byte
		err   error
	}
	done := make(chan result, 1)
	start := time.Now()
	// Repeats 1 s and 3 s after the send (ping 100 ms), both before the
	// replica is free.
	cnc := testutil.Connect(t, e.Server)
	c, err := client.New(cnc, client.WithPingInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		r, err := c.Call(testutil.Context(t, 30*time.Second), svc, []byte("queued"))
		done <- result{r, err}
	}()
	select {
	case err := <-stored:
		if err != nil {
			t.Fatalf("request not stored: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the broker subject")
	}
	// After two repeats, both to no broker, the replica is free and takes
	// it. The caller's connection publishes nothing else meanwhile.
	sent := func() int64 {
		cz, err := e.Server.Connz(&server.ConnzOptions{CID: clientID(t, cnc)})
		if err != nil || len(cz.Conns) != 1 {
			t.Fatalf("connz: %v %v", cz, err)
		}
		return cz.Conns[0].InMsgs
	}
	first := sent()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := sent() - first; n < 2 {
			return fmt.Errorf("%d repeats so far", n)
		}
		return nil
	})
	close(release)
	if err := <-blocked; err != nil {
		t.Fatalf("blocking call: %v", err)
	}
	select {
	case r := <-done:
		if r.err != nil || string(r.reply) != "queued" {
			t.Fatalf("queued call ended after %v with %q %v; want its reply (it waited in the queue and the replica served it)",
				time.Since(start).Round(time.Millisecond), r.reply, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("queued call still waiting")
	}
}
