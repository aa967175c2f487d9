package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

const svcName = "DEMO/ECHO/ECHO"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func echo(ctx context.Context, c *worker.Conv) error {
	m, err := c.Receive(ctx)
	if err != nil {
		return err
	}
	return c.Reply(m.Data)
}

// startReplica runs a real replica of svcName with replica creds scoped to
// it, as id.
func startReplica(t *testing.T, srv interface{ ClientURL() string }, u *user, id string) {
	t.Helper()
	startReplicaOf(t, u, id, svcName, echo)
}

// startReplicaOf runs a real replica of svc with u's connection, as id,
// serving h, until the test ends; opts come after (and so override) its own.
func startReplicaOf(t *testing.T, u *user, id, svc string, h worker.HandlerFunc, opts ...worker.Option) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(ctx, h, append([]worker.Option{worker.WithConn(u.nc), worker.WithService(svc),
			worker.WithReplicaID(id), worker.WithCapacity(1), worker.WithSignals(false), worker.WithLogger(quiet),
			worker.WithReadyFunc(func() { close(ready) })}, opts...)...)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("replica %s did not start: %v (violations %v)", id, err, u.violations())
	case <-time.After(15 * time.Second):
		t.Fatalf("replica not ready in 15s (violations %v)", u.violations())
	}
	t.Cleanup(func() { cancel(); <-done })
}

// Every role does its job with its own credentials and nothing it does is
// refused: a queued call (broker queues, replica creates its consumer,
// pulls, acks, registers), a warm call, admin control, and an attach
// manager's asset, KV and liveness operations.
func TestRolesDoTheirJobs(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	ctx := testutil.Context(t, 30*time.Second)

	att := connect(t, srv, k, auth.RoleAttach, auth.Scope{Name: "host1"})
	ajs, _ := jetstream.New(att.nc)
	if _, err := streams.EnsureQueue(ctx, ajs); err != nil {
		t.Fatalf("attach: ensure queue: %v (violations %v)", err, att.violations())
	}
	repKV, err := streams.EnsureBucket(ctx, ajs, proto.ReplicaBucket)
	if err != nil {
		t.Fatalf("attach: ensure bucket: %v (violations %v)", err, att.violations())
	}
	attKV, err := streams.EnsureBucket(ctx, ajs, proto.AttachBucket)
	if err != nil {
		t.Fatalf("attach: ensure bucket: %v (violations %v)", err, att.violations())
	}
	now := time.Now().UnixMilli()
	rec, _ := json.Marshal(proto.AttachInfo{ID: "host1", Host: "host1", Services: []string{svcName}, HeartbeatMS: 5000,
		Updated: now, Started: now, MaxReplicas: 4})
	if _, err := attKV.Put(ctx, "host1", rec); err != nil {
		t.Fatalf("attach: put own record: %v", err)
	}
	watch, err := repKV.WatchAll(ctx)
	if err != nil {
		t.Fatalf("attach: watch replicas: %v", err)
	}
	defer watch.Stop()
	notes, err := att.nc.SubscribeSync(proto.AttachSubject("host1"))
	if err != nil {
		t.Fatal(err)
	}

	brk := connect(t, srv, k, auth.RoleBroker, auth.Scope{Name: "b1"})
	b, err := broker.Start(ctx, brk.nc, broker.Config{ID: "b1", Logger: quiet})
	if err != nil {
		t.Fatalf("broker with broker creds: %v (violations %v)", err, brk.violations())
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })

	cl := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "alice"})
	c, err := client.New(cl.nc, client.WithTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Queued first: no replica yet.
	got := make(chan error, 1)
	go func() {
		r, err := c.Call(ctx, svcName, []byte("queued"))
		if err == nil && string(r) != "queued" {
			err = errors.New("queued call answered " + string(r))
		}
		got <- err
	}()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		s, err := streams.EnsureQueue(ctx, ajs)
		if err != nil {
			return err
		}
		if s.CachedInfo().State.Msgs == 0 {
			return errors.New("nothing queued yet")
		}
		return nil
	})
	rep := connect(t, srv, k, auth.RoleReplica, auth.Scope{Name: "r1", Service: svcName})
	startReplica(t, srv, rep, "r1")
	if err := <-got; err != nil {
		t.Fatalf("queued call: %v (client %v, broker %v, replica %v)", err, cl.violations(), brk.violations(), rep.violations())
	}
	// Warm.
	if r, err := c.Call(ctx, svcName, []byte("warm")); err != nil || string(r) != "warm" {
		t.Fatalf("warm call = %q, %v", r, err)
	}
	// The attach manager sees the replica's record, reads it, and pings it.
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, err := repKV.Get(ctx, "r1")
		return err
	})
	ping := nats.NewMsg(proto.ReplicaSubject("r1"))
	ping.Header.Set(proto.HdrOp, proto.OpPing)
	if _, err := att.nc.RequestMsg(ping, 5*time.Second); err != nil {
		t.Fatalf("attach: PING replica: %v", err)
	}
	if _, err := notes.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("attach: no notification from the broker for the queued call: %v", err)
	}
	// Admin: broker stats and QUIESCE on the replica's control subject.
	adm := connect(t, srv, k, auth.RoleAdmin, auth.Scope{})
	if _, err := adm.nc.Request(proto.BrokerStatsSubject, nil, 5*time.Second); err != nil {
		t.Fatalf("admin: broker stats: %v", err)
	}
	q := nats.NewMsg(proto.ControlSubject("r1"))
	q.Header.Set(proto.HdrOp, proto.OpQuiesce)
	if _, err := adm.nc.RequestMsg(q, 5*time.Second); err != nil {
		t.Fatalf("admin: QUIESCE: %v", err)
	}
	// Once the replica is gone its record goes (the replica deletes it).
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, err := repKV.Get(ctx, "r1"); err == nil {
			return errors.New("record still there")
		}
		return nil
	})
	for _, u := range []struct {
		name string
		u    *user
	}{{"client", cl}, {"broker", brk}, {"replica", rep}, {"attach", att}, {"admin", adm}} {
		if v := u.u.violations(); len(v) > 0 {
			t.Errorf("%s had permission violations doing its job: %v", u.name, v)
		}
	}
}
