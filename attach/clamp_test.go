//go:build linux

package attach

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
)

// record is a replica registration as the KV watch delivers it.
type record struct {
	jetstream.KeyValueEntry // methods not used here panic
	key                     string
	value                   []byte
}

func (r record) Key() string                     { return r.key }
func (r record) Value() []byte                   { return r.value }
func (r record) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

func recordOf(t *testing.T, id string, active int, conversations int64) record {
	t.Helper()
	b, err := json.Marshal(proto.ReplicaInfo{ID: id, Service: "T/CLAMP/X", Capacity: 1, Active: active,
		HeartbeatMS: 1000, Stats: proto.Stats{Conversations: conversations}})
	if err != nil {
		t.Fatal(err)
	}
	return record{key: id, value: b}
}

// TestRenotifyWhileFirstReplicaPulls: a replica registers before it pulls,
// so a re-notification can arrive while the request that started it still
// waits. It must not start a second replica for that one request; once
// the replica has taken work (or sat untouched past untouchedGrace), the
// same notification means more work and starts one.
func TestRenotifyWhileFirstReplicaPulls(t *testing.T) {
	s := &svcRun{cfg: &ServiceConfig{Service: "T/CLAMP/X", Capacity: 1, Max: 4}}
	m := &Manager{
		cfg:  &Config{Host: HostConfig{MaxReplicas: 8}},
		log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		svcs: map[string]*svcRun{s.cfg.Service: s},
		reps: map[string]*replicaRun{},
		kick: make(chan struct{}, 1),
	}
	n := proto.Notification{Service: s.cfg.Service, Missing: 1, Pending: 1}
	clamp := func() int { m.mu.Lock(); defer m.mu.Unlock(); return m.clampLocked(s, n) }

	if got := clamp(); got != 1 {
		t.Fatalf("no replica: clamp = %d, want 1", got)
	}
	m.addRepLocked(&replicaRun{id: "r1", svc: s, started: time.Now()})
	if got := clamp(); got != 0 {
		t.Fatalf("r1 starting: clamp = %d, want 0", got)
	}
	m.onReplicaRecord(recordOf(t, "r1", 0, 0))
	if got := clamp(); got != 0 {
		t.Errorf("r1 registered, has taken nothing yet: clamp = %d, want 0", got)
	}
	m.onReplicaRecord(recordOf(t, "r1", 1, 1))
	if got := clamp(); got != 1 {
		t.Errorf("r1 busy with the first request: clamp = %d, want 1", got)
	}
	m.onReplicaRecord(recordOf(t, "r1", 0, 1))
	if got := clamp(); got != 1 {
		t.Errorf("r1 took work before: clamp = %d, want 1", got)
	}

	m.addRepLocked(&replicaRun{id: "r2", svc: s, started: time.Now()})
	m.onReplicaRecord(recordOf(t, "r2", 0, 0))
	if got := clamp(); got != 0 {
		t.Errorf("r2 registered untouched: clamp = %d, want 0", got)
	}
	m.reps["r2"].untouched = time.Now().Add(-untouchedGrace - time.Millisecond)
	if got := clamp(); got != 1 {
		t.Errorf("r2 untouched past its grace (its pull is not taking the work): clamp = %d, want 1", got)
	}
}
