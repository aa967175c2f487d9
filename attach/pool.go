package attach

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/kvwatch"
	"github.com/musterhq/muster/internal/streams"
)

// The host pool (proto.PoolBucket): a manager adds itself when it starts
// (if it is not there yet: an operator's settings are kept), and follows
// its own record, applying the operator's live overrides of its limits
// (`muster host set HOST max_replicas=N max_users=N`). Disabled hosts get
// no placements from the brokers; the manager itself need not know.
// Without the pool (no bucket, no permission) the manager runs on its
// config alone.

// maxReplicasLocked is the pool's override of host.max_replicas, or the
// config's. The caller holds m.mu.
func (m *Manager) maxReplicasLocked() int {
	if m.pool.MaxReplicas > 0 {
		return m.pool.MaxReplicas
	}
	return m.cfg.Host.MaxReplicas
}

// joinPool adds the manager to the pool and follows its record.
func (m *Manager) joinPool(ctx, runCtx context.Context, js jetstream.JetStream) {
	kv, err := streams.EnsureConfigBucket(ctx, js, proto.PoolBucket)
	if err != nil {
		m.log.Warn("host pool unavailable: running on the config alone", "err", err)
		return
	}
	b, _ := json.Marshal(proto.HostSetting{ID: m.id, Added: time.Now().UnixMilli()})
	if _, err := kv.Create(ctx, proto.PoolHostKey(m.id), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		m.log.Warn("not added to the host pool", "err", err)
	}
	f := kvwatch.New(kvwatch.Config{KV: kv, Conn: m.nc, Log: m.log, Apply: m.onPoolRecord})
	m.wg.Add(1)
	go func() { defer m.wg.Done(); f.Run(runCtx) }()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := f.Sync(sctx); err != nil {
		m.log.Warn("host pool record not read yet", "err", err)
	}
}

// onPoolRecord applies the manager's own pool record (the pool is small:
// the follower reads all of it and skips the other keys).
func (m *Manager) onPoolRecord(e jetstream.KeyValueEntry) {
	if e.Key() != proto.PoolHostKey(m.id) {
		return
	}
	var h proto.HostSetting
	if e.Operation() == jetstream.KeyValuePut {
		var err error
		if h, err = proto.DecodeHostSetting(e.Value()); err != nil {
			m.log.Warn("bad pool record ignored", "err", err)
			return
		}
	}
	m.mu.Lock()
	old := m.pool
	m.pool = h
	if old.MaxReplicas != h.MaxReplicas || old.MaxUsers != h.MaxUsers || old.Disabled != h.Disabled {
		m.log.Info("pool settings", "max_replicas", m.maxReplicasLocked(), "max_users", m.maxUsers(), "disabled", h.Disabled)
		for _, s := range m.svcs {
			m.keepMinLocked(s)
		}
		m.kickLocked()
	}
	m.mu.Unlock()
}
