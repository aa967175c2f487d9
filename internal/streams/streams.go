// Package streams declares the JetStream assets Muster keeps its state in
// (the durable request queue and the registration buckets) and creates
// them idempotently, so brokers and replicas can start in any order.
package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
)

// queueConfig is the work-queue stream that holds requests no replica
// could take at once. Per-message TTLs (Nats-TTL) drop requests whose
// caller's deadline passed even if no replica ever pulls them.
func queueConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        proto.QueueStream,
		Description: "Muster: requests waiting for a free replica",
		Subjects:    []string{proto.QueuePrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      24 * time.Hour,
		AllowMsgTTL: true,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    1 << 30,
	}
}

// EnsureQueue creates (or finds) the queue stream.
func EnsureQueue(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, proto.QueueStream)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("streams: look up %s: %w", proto.QueueStream, err)
	}
	s, err = js.CreateStream(ctx, queueConfig())
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, proto.QueueStream)
	}
	if err != nil {
		return nil, fmt.Errorf("streams: create %s: %w", proto.QueueStream, err)
	}
	return s, nil
}

// QueueConsumer creates (or finds) the durable pull consumer that all
// replicas of svc share; queued requests leave it oldest first.
func QueueConsumer(ctx context.Context, s jetstream.Stream, svc proto.Service) (jetstream.Consumer, error) {
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       proto.ConsumerName(svc),
		Description:   "Muster queue of " + svc.String(),
		FilterSubject: proto.QueueSubject(svc),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxWaiting:    4096,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("streams: consumer for %s: %w", svc, err)
	}
	return c, nil
}

// registrationTTL is how long a registration record stays stored without a
// rewrite. Readers judge liveness sooner, by the record's own heartbeat
// (proto.ReplicaInfo.Expired); the TTL only keeps dead records from piling up.
const registrationTTL = 2 * time.Minute

// EnsureBucket creates (or finds) a registration bucket.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("streams: look up bucket %s: %w", name, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "Muster registrations",
		History:     1,
		TTL:         registrationTTL,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		if kv2, err2 := js.KeyValue(ctx, name); err2 == nil {
			return kv2, nil // lost a creation race
		}
		return nil, fmt.Errorf("streams: create bucket %s: %w", name, err)
	}
	return kv, nil
}
