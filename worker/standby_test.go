package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// A standby is registered as "standby" and serves nothing on the warm
// subject; a call on the standby subject activates it: it answers, joins
// the warm path, and its record says "ready".
func TestStandbyActivatedByWork(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	const svc = "T/STANDBY/X"
	service := proto.MustService(svc)
	done := runReplica(t, context.Background(), demo.Echo, worker.WithConn(testutil.Connect(t, s)),
		worker.WithService(svc), worker.WithReplicaID("sb1"), worker.WithStandby(true))
	ctx := testutil.Context(t, 20*time.Second)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, proto.ReplicaBucket)
	if err != nil {
		t.Fatal(err)
	}
	state := func(want string) {
		t.Helper()
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			e, err := kv.Get(ctx, "sb1")
			if err != nil {
				return err
			}
			ri, err := proto.DecodeReplicaInfo(e.Value())
			if err != nil {
				return err
			}
			if ri.State != want {
				return fmt.Errorf("state %q, want %q", ri.State, want)
			}
			return nil
		})
	}
	state(proto.StateStandby)
	if _, err := nc.Request(proto.WarmSubject(service), []byte("x"), 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a parked standby is on the warm subject: %v", err)
	}
	r, err := nc.Request(proto.StandbySubject(service), []byte("wake"), 5*time.Second)
	if err != nil || string(r.Data) != "wake" {
		t.Fatalf("call on the standby subject: %v %v", r, err)
	}
	state(proto.StateReady)
	r, err = nc.Request(proto.WarmSubject(service), []byte("warm"), 5*time.Second)
	if err != nil || string(r.Data) != "warm" {
		t.Fatalf("warm call after activation: %v %v", r, err)
	}
	if _, err := nc.Request(proto.StandbySubject(service), []byte("x"), 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("an activated replica still takes the standby subject: %v", err)
	}
	control(t, nc, "sb1", proto.OpImmed)
	waitRun(t, done, 10*time.Second)
}
