//go:build linux

package attach

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// failingService starts a manager whose service T/HEAL/X fails to start
// until its marker file exists, and makes it failing with one call.
func failingService(t *testing.T) (e *harness.Env, m *Manager, marker string) {
	t.Helper()
	e = harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/HEAL/X worker-fail-until max: 1")
	marker = filepath.Join(t.TempDir(), "fixed")
	cfg.Services[0].Env[markerEnv] = marker
	m = startManager(t, e, cfg)
	if _, err := e.Client.Call(testutil.Context(t, 30*time.Second), "T/HEAL/X", nil); !errors.Is(err, proto.ErrServiceFailing) {
		t.Fatalf("call: %v, want 0900/0004", err)
	}
	if m.Info().Failing["T/HEAL/X"] == "" {
		t.Fatal("service not failing")
	}
	return e, m, marker
}

// TestFailingServiceHealsBySchedule: once its program is fixed, a failing
// service comes back by itself within 30s (the manager's probe schedule),
// with no call and no operator.
func TestFailingServiceHealsBySchedule(t *testing.T) {
	e, m, marker := failingService(t)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if f := m.Info().Failing["T/HEAL/X"]; f != "" {
			return fmt.Errorf("still failing: %s", f)
		}
		return nil
	})
	t.Logf("healed %v after the fix (probe interval %v)", time.Since(fixed).Round(time.Millisecond), probeInterval)
	if got, err := e.Client.Call(testutil.Context(t, 10*time.Second), "T/HEAL/X", []byte("back")); err != nil || string(got) != "back" {
		t.Fatalf("call after healing: %q %v", got, err)
	}
}

// TestServiceResetHealsAtOnce: muster.attach.reset.C.N.S clears failing at
// once (the registration brokers read is rewritten before the answer),
// starts a probe and names the manager that reset it.
func TestServiceResetHealsAtOnce(t *testing.T) {
	e, m, marker := failingService(t)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	msg, err := e.NC.Request(proto.AttachResetSubject(proto.MustService("T/HEAL/X")), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep proto.AttachReset
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Attach != m.ID() || rep.Service != "T/HEAL/X" || rep.WasFailing == "" || !rep.Probe {
		t.Fatalf("answer %+v", rep)
	}
	// At once: the record brokers read says it is no longer failing.
	e2, err := m.attKV.Get(testutil.Context(t, 5*time.Second), m.ID())
	if err != nil {
		t.Fatal(err)
	}
	if ai, err := proto.DecodeAttachInfo(e2.Value()); err != nil || ai.Failing["T/HEAL/X"] != "" {
		t.Fatalf("registration after the reset: %+v %v", ai.Failing, err)
	}
	// Brokers learn it through their KV watch, milliseconds later: a call
	// made in between may still get 0900/0004.
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		got, err := e.Client.Call(testutil.Context(t, 10*time.Second), "T/HEAL/X", []byte("back"))
		if err != nil || string(got) != "back" {
			return fmt.Errorf("call after reset: %q %v", got, err)
		}
		return nil
	})
	// A service nobody here offers gets no answer.
	if _, err := e.NC.Request(proto.AttachResetSubject(proto.MustService("T/NOBODY/X")), nil, 200*time.Millisecond); err == nil {
		t.Error("a reset of a service nobody offers was answered")
	}
}

// TestDemandNotDelayedByLongBackoff: however long the restart backoff, a
// start the broker asks for waits at most demandBackoffCap.
func TestDemandNotDelayedByLongBackoff(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/BACKOFF/X worker-echo max: 1")
	m := startManager(t, e, cfg)
	m.mu.Lock()
	s := m.svcs["T/BACKOFF/X"]
	s.crashes = 10
	s.lastFail, s.nextStart = time.Now(), time.Now().Add(time.Minute) // as after a run of crashes
	m.mu.Unlock()
	start := time.Now()
	if got, err := e.Client.Call(testutil.Context(t, 15*time.Second), "T/BACKOFF/X", []byte("x")); err != nil || string(got) != "x" {
		t.Fatalf("call: %q %v", got, err)
	}
	took := time.Since(start)
	t.Logf("served after %v with a 1m backoff (cap %v)", took, demandBackoffCap)
	if took > demandBackoffCap+5*time.Second {
		t.Errorf("served after %v, want within the cap %v and a start", took, demandBackoffCap)
	}
	// The replica registered: the crash count is reset.
	m.mu.Lock()
	crashes := s.crashes
	m.mu.Unlock()
	if crashes != 0 {
		t.Errorf("crash count %d after a replica registered, want 0", crashes)
	}
}
