//go:build linux

package attach

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/attach/internal/statedir"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/testutil"
)

// replicaRecords waits until cfg's manager has n replicas registered and
// returns their state records.
func replicaRecords(t *testing.T, m *Manager, cfg *Config, n int) []statedir.Record {
	t.Helper()
	var recs []statedir.Record
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if i := m.Info(); i.Replicas != n || i.Starting != 0 {
			return fmt.Errorf("%d replicas, %d starting", i.Replicas, i.Starting)
		}
		recs, _ = statedir.Dir(cfg.Host.StateDir).Load()
		if len(recs) != n || recs[0].PID == 0 {
			return fmt.Errorf("%d state records", len(recs))
		}
		return nil
	})
	return recs
}

// TestSecondManagerOnSameStateRefused: a second manager on a state dir
// another holds refuses at once, naming the dir and the holder's pid, and
// touches nothing of the first.
func TestSecondManagerOnSameStateRefused(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ONE/X worker-echo min: 1, max: 1")
	m := startManager(t, e, cfg)
	recs := replicaRecords(t, m, cfg, 1)

	start := time.Now()
	m2, err := Start(testutil.Context(t, 10*time.Second), e.NC, cfg, Options{Conn: natsconn.Config{URL: e.Server.ClientURL()}, Logger: harness.Quiet})
	if err == nil {
		shutdown(t, m2)
		t.Fatal("a second manager on the same state dir started")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("refused after %v, want at once", took)
	}
	if !errors.Is(err, statedir.ErrLocked) || !strings.Contains(err.Error(), cfg.Host.StateDir) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("err %q: want ErrLocked naming %s and pid %d", err, cfg.Host.StateDir, os.Getpid())
	}
	if !running(recs[0].PID) {
		t.Error("the refused manager stopped the first one's replica")
	}
	if _, err := os.Stat(recs[0].TempDir); err != nil {
		t.Errorf("the refused manager touched the first one's temp dir: %v", err)
	}
	if n := alive(m); n != 1 {
		t.Errorf("first manager has %d replicas, want 1", n)
	}
}

// TestTwoInstancesSameHostName: two instances with the same host name and
// TMPDIR, but their own data dirs (and NATS), get their own state and temp
// dirs from their data dirs: starting the second touches none of the
// first's replicas or temp dirs, and each stops only its own.
func TestTwoInstancesSameHostName(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	var (
		mgrs []*Manager
		cfgs []*Config
		recs [][]statedir.Record
	)
	for i := range 2 {
		e := harness.Start(t, broker.Config{})
		cfg := testConfig(t, 8, "T/TWO/X worker-echo min: 2, max: 2")
		cfg.Host.Name = "same-host"
		cfg.dirsSet.state, cfg.dirsSet.log, cfg.dirsSet.temp = false, false, false // the defaults
		cfg.UseDataDir(filepath.Join(t.TempDir(), fmt.Sprint("data", i)))
		if !strings.HasPrefix(cfg.Host.TempDir, os.Getenv("TMPDIR")) {
			t.Fatalf("temp root %s not under TMPDIR", cfg.Host.TempDir)
		}
		m := startManager(t, e, cfg)
		mgrs, cfgs = append(mgrs, m), append(cfgs, cfg)
		recs = append(recs, replicaRecords(t, m, cfg, 2))
	}
	if cfgs[0].Host.StateDir == cfgs[1].Host.StateDir || cfgs[0].Host.TempDir == cfgs[1].Host.TempDir {
		t.Fatalf("instances share dirs: %+v / %+v", cfgs[0].Host, cfgs[1].Host)
	}
	for _, r := range recs[0] {
		if !running(r.PID) {
			t.Errorf("the second instance stopped the first one's replica %s", r.ID)
		}
		if _, err := os.Stat(r.TempDir); err != nil {
			t.Errorf("the second instance removed the first one's temp dir: %v", err)
		}
	}
	// Stopping the second leaves the first's alone.
	if err := mgrs[1].Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs[0] {
		if !running(r.PID) {
			t.Errorf("stopping the second instance stopped the first one's replica %s", r.ID)
		}
	}
	if n := alive(mgrs[0]); n != 2 {
		t.Errorf("first instance has %d replicas, want 2", n)
	}
}

// TestStartFailsWithOrphans: a Start that fails (its registration is
// refused) after it found orphans of a killed run still stops them, and
// releases the state dir, so the next Start works.
func TestStartFailsWithOrphans(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	cfg := testConfig(t, 8, "T/ORPHAN/FAIL worker-echo min: 2, max: 2")
	recs := orphansOf(t, e, cfg, nil)
	cfg.Services[0].Min = 0

	bad := testutil.StartNATS(t)
	nc := testutil.Connect(t, bad)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	refuseRegistrations(t, js)
	m, err := Start(testutil.Context(t, 20*time.Second), nc, cfg, Options{Conn: natsconn.Config{URL: bad.ClientURL()}, Logger: harness.Quiet})
	if err == nil || !strings.Contains(err.Error(), "attach: register") {
		if m != nil {
			shutdown(t, m)
		}
		t.Fatalf("Start = %v; want the registration refused", err)
	}
	for _, r := range recs {
		if running(r.PID) {
			t.Errorf("orphan %d still running after the failed Start", r.PID)
		}
	}
	startManager(t, e, cfg) // the state dir is free again
}
