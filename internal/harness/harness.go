// Package harness starts a whole Muster system in a test: a real embedded
// NATS server on a random port, a broker, a client, and in-process
// replicas, all stopped when the test ends.
package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// Env is a running system.
type Env struct {
	T      testing.TB
	Server *server.Server
	NC     *nats.Conn
	Broker *broker.Broker
	Client *client.Client
}

// Quiet is a logger that discards everything.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Start starts NATS, a broker and a client; the test's cleanup closes the
// client and shuts the broker down (and fails the test if that takes over
// 10s).
func Start(t testing.TB, cfg broker.Config) *Env {
	t.Helper()
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	if cfg.Logger == nil {
		cfg.Logger = Quiet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	c, err := client.New(testutil.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &Env{T: t, Server: s, NC: nc, Broker: b, Client: c}
}

// Replica is an in-process replica.
type Replica struct {
	Cancel context.CancelFunc
	Done   chan error // receives Run's result
}

// Wait waits up to d for the replica to exit and returns Run's result.
func (r *Replica) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.Done:
		r.Done <- err
		return err
	case <-time.After(d):
		t.Fatalf("replica still running after %v", d)
		return nil
	}
}

// Exited reports whether the replica has exited.
func (r *Replica) Exited() bool {
	select {
	case err := <-r.Done:
		r.Done <- err
		return true
	default:
		return false
	}
}

// StartReplica runs worker.Run in a goroutine on its own connection and
// waits until the replica is registered. It is stopped at test end.
func (e *Env) StartReplica(h worker.HandlerFunc, opts ...worker.Option) *Replica {
	e.T.Helper()
	nc := testutil.Connect(e.T, e.Server)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	r := &Replica{Cancel: cancel, Done: make(chan error, 1)}
	all := append([]worker.Option{worker.WithConn(nc), worker.WithSignals(false), worker.WithLogger(Quiet),
		worker.WithGrace(2 * time.Second), worker.WithReadyFunc(func() { close(ready) })}, opts...)
	go func() { r.Done <- worker.Run(ctx, h, all...) }()
	select {
	case <-ready:
	case err := <-r.Done:
		e.T.Fatalf("replica did not start: %v", err)
	case <-time.After(10 * time.Second):
		e.T.Fatal("replica not ready within 10s")
	}
	e.T.Cleanup(func() {
		cancel()
		select {
		case <-r.Done:
		case <-time.After(10 * time.Second):
			e.T.Error("replica did not stop within 10s")
		}
	})
	return r
}

// RegisterAttach writes an attach manager record offering services, as a
// real attach manager does, and waits until the broker sees it.
func RegisterAttach(t testing.TB, e *Env, id string, services ...string) {
	t.Helper()
	js, err := jetstream.New(e.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, proto.AttachBucket)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(proto.AttachInfo{ID: id, Host: "test", Version: "test", Services: services, HeartbeatMS: 60000, Updated: time.Now().UnixMilli()})
	if _, err := kv.Put(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		for _, s := range e.Broker.Stats(ctx) {
			if s.Service == services[0] {
				return nil
			}
		}
		return fmt.Errorf("broker does not see attach manager %s", id)
	})
}
