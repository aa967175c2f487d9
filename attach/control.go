package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// Isolation (maintenance mode): an isolated host starts no replicas — not
// for notifications, min, restarts or probes — and its running replicas
// quiesce: each gets SIGTERM and its full grace to finish its open
// conversations, then exits. Brokers skip isolated managers when they
// choose one (AttachInfo.Isolated). `muster host isolate|restore`
// (proto.AttachControlSubject) switches it; the state is kept in the
// state dir, so a restarted manager stays isolated until restored.

// isolationFile holds the isolation record in the state dir.
const isolationFile = "isolated"

// isolation is the persisted record.
type isolation struct {
	Since int64  `json:"since"` // Unix ms
	By    string `json:"by"`    // what isolated it
}

// loadIsolation restores the isolation a previous run left.
func (m *Manager) loadIsolation() error {
	b, err := os.ReadFile(filepath.Join(m.cfg.Host.StateDir, isolationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("attach: isolation state: %w", err)
	}
	var iso isolation
	if json.Unmarshal(b, &iso) != nil {
		iso.By = "a previous run (unreadable record)"
	}
	m.isolated = true
	m.isolatedBy = fmt.Sprintf("%s since %s", iso.By, time.UnixMilli(iso.Since).UTC().Format(time.RFC3339))
	m.log.Warn("host isolated: no replicas will start until `muster host restore`", "isolated", m.isolatedBy)
	return nil
}

// setIsolation switches isolation and persists it. Isolating quiesces the
// running replicas.
func (m *Manager) setIsolation(on bool, by string) error {
	path := filepath.Join(m.cfg.Host.StateDir, isolationFile)
	if on {
		b, _ := json.Marshal(isolation{Since: time.Now().UnixMilli(), By: by})
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("cannot record the isolation: %w", err)
		}
	} else if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot clear the isolation: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.isolated
	m.isolated = on
	switch {
	case on && !was:
		m.isolatedBy = by
		n := 0
		for _, r := range m.reps {
			if r.proc == nil || r.stopReason != "" {
				continue // still being spawned (commitLocked quiesces it) or already stopping
			}
			r.stopReason, r.quiesce = "host isolated", true
			close(r.stopReq)
			n++
		}
		m.log.Warn("host isolated: no new replicas; running ones quiesce", "by", by, "quiescing", n)
	case !on && was:
		m.isolatedBy = ""
		m.log.Info("host restored: replicas start again", "by", by)
		for _, s := range m.svcs {
			m.keepMinLocked(s)
		}
	}
	m.kickLocked()
	return nil
}

// onControl answers muster.attach.ctl.<id>: ISOLATE or RESTORE, with the
// registration after the change (written before the answer, so listings
// agree at once).
func (m *Manager) onControl(msg *nats.Msg) {
	m.mu.Lock()
	stopping := m.stopping
	m.mu.Unlock()
	if stopping {
		return // the asker times out or learns the host is gone
	}
	m.replicas.Add(1) // Shutdown waits for the registration written below
	defer m.replicas.Done()
	op := msg.Header.Get(proto.HdrOp)
	var err error
	switch op {
	case proto.OpIsolate:
		err = m.setIsolation(true, "muster host isolate")
	case proto.OpRestore:
		err = m.setIsolation(false, "muster host restore")
	default:
		m.respondError(msg, proto.Errorf(proto.CodeBadRequest, "%s %q: want %s or %s", proto.HdrOp, op, proto.OpIsolate, proto.OpRestore))
		return
	}
	if err != nil {
		m.respondError(msg, proto.Errorf(proto.CodeUnavailable, "%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.register(ctx); err != nil {
		m.log.Warn("registration not written after "+op, "err", err)
	}
	b, _ := json.Marshal(m.Info())
	_ = msg.Respond(b)
}

// respondError answers msg with the coded error e.
func (m *Manager) respondError(msg *nats.Msg, e *proto.Error) {
	if msg.Reply == "" {
		return
	}
	r := nats.NewMsg(msg.Reply)
	proto.SetError(r.Header, e)
	_ = m.nc.PublishMsg(r)
}
