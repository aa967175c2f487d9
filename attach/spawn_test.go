//go:build linux

package attach

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/testutil"
)

// TestSlowSpawnDoesNotBlockTheManager: spawning runs outside the manager's
// lock, so a slow spawn holds up neither Info, Counters nor the next
// notification, and reservations keep the clamp at max under concurrent
// notifications.
func TestSlowSpawnDoesNotBlockTheManager(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ECHO/SLOW worker-echo max: 3, idle_timeout: 30s")
	svc := cfg.Services[0].Service
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	entered := make(chan struct{}, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := Start(ctx, e.NC, cfg, Options{Conn: natsconn.Config{URL: e.Server.ClientURL()}, Logger: harness.Quiet,
		beforeSpawn: func() { entered <- struct{}{}; <-release }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unblock(); shutdown(t, m); assertNoLeftovers(t, cfg) })
	notify := func(pending int) {
		b, _ := json.Marshal(proto.Notification{Version: 1, Service: svc, Missing: 1, Pending: pending, Time: time.Now().UnixMilli()})
		if err := e.NC.Publish(proto.AttachSubject(m.ID()), b); err != nil {
			t.Error(err)
		}
	}
	notify(1)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no spawn began")
	}
	// A spawn is stuck: the manager still answers at once.
	prompt := func(what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { defer close(done); f() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s blocked behind a slow spawn", what)
		}
	}
	prompt("Info", func() { m.Info() })
	prompt("Counters", func() { m.Counters() })
	// Concurrent notifications reserve up to max and no further.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { notify(100) })
	}
	wg.Wait()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var i proto.AttachInfo
		prompt("Info", func() { i = m.Info() })
		if i.Starting != 3 || i.Replicas != 3 {
			return fmt.Errorf("%d replicas, %d starting; want the 3 of max reserved", i.Replicas, i.Starting)
		}
		return nil
	})
	for range 10 {
		notify(100)
	}
	unblock()
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if i := m.Info(); i.Replicas != 3 || i.Starting != 0 {
			return fmt.Errorf("%d replicas, %d starting; want 3 registered", i.Replicas, i.Starting)
		}
		return nil
	})
	if c := m.Counters()[svc]; c.HighWater != 3 || c.Started != 3 {
		t.Fatalf("counters %+v: want exactly max (3) started", c)
	}
}

// A notification from a deposed leading broker (an older lease epoch than
// one already seen) is ignored: work is not started twice.
func TestNotificationFencing(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ECHO/FENCE worker-echo max: 3, idle_timeout: 30s")
	svc := cfg.Services[0].Service
	m := startManager(t, e, cfg)
	send := func(lease uint64) {
		b, _ := json.Marshal(proto.Notification{Version: 1, Service: svc, Missing: 1, Pending: 1, Time: time.Now().UnixMilli(), Broker: "b", Lease: lease})
		if err := e.NC.Publish(proto.AttachSubject(m.ID()), b); err != nil {
			t.Fatal(err)
		}
	}
	send(7)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := m.Counters()[svc].Started; n != 1 {
			return fmt.Errorf("%d started, want 1", n)
		}
		return nil
	})
	send(3) // a deposed leader
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := m.Counters()[svc].Fenced; n != 1 {
			return fmt.Errorf("%d fenced, want 1", n)
		}
		return nil
	})
	if n := m.Counters()[svc].Started; n != 1 {
		t.Fatalf("%d started after a deposed leader's notification, want still 1", n)
	}
}
