package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

// TestBrokerSyncsQueueConsumer: replicas only look their queue consumer
// up, so the broker brings it up to date: a consumer made with an older
// config has Muster's again once the broker queued a request for its
// service.
func TestBrokerSyncsQueueConsumer(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	svc := proto.MustService("T/CONS/SYNC")
	js, err := jetstream.New(e.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 20*time.Second)
	if _, err := js.CreateOrUpdateConsumer(ctx, proto.QueueStream, jetstream.ConsumerConfig{
		Durable: proto.ConsumerName(svc), Description: "an older Muster", FilterSubject: proto.QueueSubject(svc),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxWaiting: 4096,
	}); err != nil {
		t.Fatal(err)
	}
	harness.RegisterAttach(t, e, "cons-attach", svc.String())
	nc := testutil.Connect(t, e.Server)
	inbox, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(proto.CallSubject(svc))
	m.Reply = inbox.Subject
	m.Header.Set(proto.HdrProgress, "1")
	m.Header.Set(proto.HdrTimeout, "5000")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if st, err := inbox.NextMsg(5 * time.Second); err != nil || st.Header.Get(proto.HdrStatus) != proto.StatusQueued {
		t.Fatalf("want the request queued: %v %v", st, err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		c, err := js.Consumer(ctx, proto.QueueStream, proto.ConsumerName(svc))
		if err != nil {
			return err
		}
		if cfg := c.CachedInfo().Config; cfg.AckWait != streams.AckWait || cfg.Description != "Muster queue of "+svc.String() {
			return fmt.Errorf("consumer config ack_wait %v, description %q: not brought up to date", cfg.AckWait, cfg.Description)
		}
		return nil
	})
}
