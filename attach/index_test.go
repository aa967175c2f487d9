//go:build linux

package attach

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// indexMismatch compares each service's own replica set (svcRun.reps,
// which countLocked reads) with the manager's replicas of that service.
func indexMismatch(m *Manager) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, s := range m.svcs {
		var want, got []string
		for id, r := range m.reps {
			if r.svc == s {
				want = append(want, id)
			}
		}
		for id, r := range s.reps {
			if r.svc != s || m.reps[id] != r {
				return fmt.Errorf("%s: replica %s in its set is not the manager's replica of it", name, id)
			}
			got = append(got, id)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) {
			return fmt.Errorf("%s: its set holds %v, the manager has %v", name, got, want)
		}
	}
	return nil
}

// TestReplicaIndex: each service's replica set holds exactly the
// service's replicas through starts for min, a start on demand, a crash
// and its restart, and a shutdown.
func TestReplicaIndex(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/IDX/A worker-echo min: 2, max: 3", "T/IDX/B worker-echo min: 1", "T/IDX/C worker-echo max: 1")
	m := startManager(t, e, cfg)
	settled := func(n int) func() error {
		return func() error {
			if ai := m.Info(); ai.Replicas != n || ai.Starting != 0 {
				return fmt.Errorf("%d replicas, %d starting; want %d running", ai.Replicas, ai.Starting, n)
			}
			return indexMismatch(m)
		}
	}
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, settled(3))

	if got, err := e.Client.Call(testutil.Context(t, 20*time.Second), "T/IDX/C", []byte("hi")); err != nil || string(got) != "hi" {
		t.Fatalf("call: %q %v", got, err)
	}
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, settled(4))

	m.mu.Lock()
	var victim *replicaRun
	for _, r := range m.svcs["T/IDX/A"].reps {
		victim = r
	}
	pid := victim.proc.PID()
	m.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if c := m.Counters()["T/IDX/A"]; c.Crashed != 1 || c.Started != 3 {
			return fmt.Errorf("counters %+v: want the crash and a restart", c)
		}
		m.mu.Lock()
		_, stale := m.svcs["T/IDX/A"].reps[victim.id]
		m.mu.Unlock()
		if stale {
			return fmt.Errorf("the killed replica %s is still in its service's set", victim.id)
		}
		return settled(4)()
	})

	shutdown(t, m)
	if err := indexMismatch(m); err != nil {
		t.Error(err)
	}
	for name, s := range m.svcs {
		if len(s.reps) > 0 {
			t.Errorf("%s: %d replicas in its set after the shutdown", name, len(s.reps))
		}
	}
}

// BenchmarkCheckReplicas is the manager's 100 ms check on a host with
// 200 running replicas (one each of 200 services with min 1) and idle
// services besides: its cost must not grow with the idle services
// (muster bench host measures the whole attach manager).
func BenchmarkCheckReplicas(b *testing.B) {
	for _, services := range []int{200, 1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			m := &Manager{
				cfg:  &Config{Host: HostConfig{MaxReplicas: 200, Heartbeat: 2 * time.Second}},
				log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
				svcs: map[string]*svcRun{},
				reps: map[string]*replicaRun{},
				kick: make(chan struct{}, 1),
			}
			now := time.Now()
			for i := range services {
				sc := &ServiceConfig{Service: fmt.Sprintf("B/S%05d/X", i), Max: 1, Capacity: 1, StartTimeout: time.Minute}
				s := &svcRun{cfg: sc}
				m.svcs[sc.Service] = s
				if i < 200 {
					sc.Min = 1
					m.addRepLocked(&replicaRun{id: fmt.Sprintf("r%d", i), svc: s, started: now, registered: true, lastBeat: now.Add(time.Hour)})
				}
			}
			b.ResetTimer()
			for range b.N {
				m.checkReplicas()
			}
			if len(m.reps) != 200 {
				b.Fatalf("%d replicas, want 200", len(m.reps))
			}
		})
	}
}
