//go:build linux

package attach

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/httpd"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/testutil"
)

// serveHTTP serves m's health checks and metrics (and more metrics, if
// given) on a random port, as `muster attach --http` does, and returns
// the base URL.
func serveHTTP(t *testing.T, m *Manager, more ...prometheus.Collector) string {
	t.Helper()
	srv, err := httpd.Listen("127.0.0.1:0", httpd.Options{Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	})
	if err := srv.Add(m.HealthChecks(), m.Collector()); err != nil {
		t.Fatal(err)
	}
	for _, c := range more {
		if err := srv.Add(nil, c); err != nil {
			t.Fatal(err)
		}
	}
	srv.Ready()
	return srv.URL()
}

// healthz checks that GET /healthz answers want with a body containing
// every one of contains.
func healthz(url string, want int, contains ...string) error {
	code, body, err := testutil.TryHTTPGet(url + "/healthz")
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("/healthz %d %q, want %d", code, body, want)
	}
	for _, c := range contains {
		if !strings.Contains(body, c) {
			return fmt.Errorf("/healthz %d %q lacks %q", code, body, c)
		}
	}
	return nil
}

func setIsolated(m *Manager, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.isolated = on
}

// TestHTTPHealthAndMetrics: a healthy manager answers 200; its host
// figures and per-service counters are on /metrics and follow what it
// does (a call starts a replica); an isolated host answers 503.
func TestHTTPHealthAndMetrics(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/HTTP/ECHO"
	cfg := testConfig(t, 8, svc+" worker-echo max: 2")
	m := startManager(t, e, cfg)
	url := serveHTTP(t, m)
	if err := healthz(url, http.StatusOK, "ok"); err != nil {
		t.Fatal(err)
	}
	labels := []string{"attach", m.ID(), "service", svc}
	ms := testutil.Scrape(t, url+"/metrics")
	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"muster_attach_max_replicas", labels[:2], 8},
		{"muster_attach_replicas", labels[:2], 0},
		{"muster_attach_isolated", labels[:2], 0},
		{"muster_attach_failing_services", labels[:2], 0},
		{"muster_attach_service_failing", labels, 0},
		{"muster_attach_replicas_started_total", labels, 0},
	} {
		if v, ok := ms.Value(want.name, want.labels...); !ok || v != want.value {
			t.Errorf("%s%v = %v (present %v), want %v", want.name, want.labels, v, ok, want.value)
		}
	}
	if v, ok := ms.Value("muster_attach_host_memory_total_bytes", labels[:2]...); !ok || v <= 0 {
		t.Errorf("muster_attach_host_memory_total_bytes = %v (present %v)", v, ok)
	}
	if _, ok := ms.Value("process_resident_memory_bytes"); !ok {
		t.Error("no process metrics")
	}

	if got, err := e.Client.Call(testutil.Context(t, 20*time.Second), svc, []byte("hi")); err != nil || string(got) != "hi" {
		t.Fatalf("call: %q %v", got, err)
	}
	ms = testutil.Scrape(t, url+"/metrics")
	if v, _ := ms.Value("muster_attach_replicas_started_total", labels...); v != 1 {
		t.Errorf("muster_attach_replicas_started_total = %v after a cold call, want 1", v)
	}
	if v, _ := ms.Value("muster_attach_replicas", labels[:2]...); v != 1 {
		t.Errorf("muster_attach_replicas = %v after a cold call, want 1", v)
	}

	setIsolated(m, true)
	if err := healthz(url, http.StatusServiceUnavailable, "attach.isolated: host "+m.ID()+" is isolated"); err != nil {
		t.Error(err)
	}
	if v, _ := testutil.Scrape(t, url+"/metrics").Value("muster_attach_isolated", labels[:2]...); v != 1 {
		t.Errorf("muster_attach_isolated = %v while isolated", v)
	}
	setIsolated(m, false)
	if err := healthz(url, http.StatusOK); err != nil {
		t.Error(err)
	}
}

// TestHTTPFailingService: while a service is failing the manager answers
// 503 naming it and why, and /metrics says so; once reset (and fixed) it
// answers 200 again.
func TestHTTPFailingService(t *testing.T) {
	e, m, marker := failingService(t)
	url := serveHTTP(t, m)
	if err := healthz(url, http.StatusServiceUnavailable, "attach.services: failing: T/HEAL/X ("); err != nil {
		t.Fatal(err)
	}
	labels := []string{"attach", m.ID(), "service", "T/HEAL/X"}
	ms := testutil.Scrape(t, url+"/metrics")
	if v, _ := ms.Value("muster_attach_service_failing", labels...); v != 1 {
		t.Errorf("muster_attach_service_failing = %v, want 1", v)
	}
	if v, _ := ms.Value("muster_attach_failing_services", labels[:2]...); v != 1 {
		t.Errorf("muster_attach_failing_services = %v, want 1", v)
	}
	if v, _ := ms.Value("muster_attach_replica_start_failures_total", labels...); v < 3 {
		t.Errorf("muster_attach_replica_start_failures_total = %v, want at least 3", v)
	}

	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.NC.Request(proto.AttachResetSubject(proto.MustService("T/HEAL/X")), nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := healthz(url, http.StatusOK); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPHealthAcrossNATSRestart: while the NATS server is down the
// manager answers 503 (NATS not connected, JetStream not asked) within
// about a second; within 2 s of the server's return it answers 200.
func TestHTTPHealthAcrossNATSRestart(t *testing.T) {
	s := testutil.StartNATS(t)
	opts, err := natsconn.Config{URL: s.ClientURL(), Name: t.Name()}.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc := testutil.Connect(t, s, opts...)
	cfg := testConfig(t, 2, "T/HTTP/RESTART worker-echo")
	m, err := Start(testutil.Context(t, 10*time.Second), nc, cfg, Options{Conn: natsconn.Config{URL: s.ClientURL()}, Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	url := serveHTTP(t, m)
	if err := healthz(url, http.StatusOK); err != nil {
		t.Fatal(err)
	}
	s = testutil.RestartNATS(t, s, func() {
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			return healthz(url, http.StatusServiceUnavailable, "attach.nats: not connected to NATS", "attach.jetstream: ")
		})
		start := time.Now()
		if err := healthz(url, http.StatusServiceUnavailable); err != nil {
			t.Error(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("/healthz took %v while NATS was down", took)
		}
	})
	defer func() { // before the new server's cleanup: deregistering needs it
		shutdown(t, m)
		assertNoLeftovers(t, cfg)
	}()
	back := time.Now()
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error { return healthz(url, http.StatusOK) })
	t.Logf("/healthz 200 %v after NATS was back", time.Since(back).Round(time.Millisecond))
}

// TestHTTPStartPhases: a cold call through a broker and the manager adds
// one observation to each start phase of its service (exec, connect,
// register) and to the start total, each positive, with the phases adding
// up to the total, and one to the broker's notification delay. Replicas
// that exit before registering add nothing: they are failed starts.
func TestHTTPStartPhases(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc, bad = "T/PHASE/ECHO", "T/PHASE/CRASH"
	cfg := testConfig(t, 8, svc+" worker-echo max: 1", bad+" worker-crash max: 1")
	m := startManager(t, e, cfg)
	url := serveHTTP(t, m, e.Broker.Collector())
	phases := []string{phaseExec, phaseConnect, phaseRegister}
	attachLabels := func(s string) []string { return []string{"attach", m.ID(), "service", s} }
	ms := testutil.Scrape(t, url+"/metrics")
	for _, s := range []string{svc, bad} { // no series before a service's first start: idle services cost nothing
		for _, ph := range phases {
			if n, _, ok := ms.Histogram("muster_attach_start_phase_seconds", append(attachLabels(s), "phase", ph)...); ok || n != 0 {
				t.Errorf("%s phase %s before any start: count %d (present %v), want no series", s, ph, n, ok)
			}
		}
	}

	ctx := testutil.Context(t, 30*time.Second)
	if got, err := e.Client.Call(ctx, svc, []byte("hi")); err != nil || string(got) != "hi" {
		t.Fatalf("call: %q %v", got, err)
	}
	// The manager observes when its watch delivers the registration,
	// which may come after the reply.
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		ms = testutil.Scrape(t, url+"/metrics")
		if n, _, _ := ms.Histogram("muster_attach_start_seconds", attachLabels(svc)...); n != 1 {
			return fmt.Errorf("muster_attach_start_seconds count %d after one cold start, want 1", n)
		}
		return nil
	})
	_, total, _ := ms.Histogram("muster_attach_start_seconds", attachLabels(svc)...)
	sum := 0.0
	for _, ph := range phases {
		n, s, _ := ms.Histogram("muster_attach_start_phase_seconds", append(attachLabels(svc), "phase", ph)...)
		if n != 1 || s <= 0 {
			t.Errorf("phase %s after one cold start: count %d sum %v, want 1 and > 0", ph, n, s)
		}
		sum += s
	}
	// The replica's start is recorded in whole ms: allow that much.
	if total <= 0 || math.Abs(sum-total) > 0.002 {
		t.Errorf("start phases add up to %.4fs, total %.4fs", sum, total)
	}
	if n, s, ok := ms.Histogram("muster_broker_notify_delay_seconds", "broker", e.Broker.ID(), "service", svc); n != 1 || s <= 0 {
		t.Errorf("muster_broker_notify_delay_seconds after one cold call: count %d sum %v (present %v), want 1 and > 0", n, s, ok)
	}

	// A program that exits at once: failed starts, none observed.
	if _, err := e.Client.Call(ctx, bad, nil); !errors.Is(err, proto.ErrServiceFailing) {
		t.Fatalf("call of a program that exits at once: %v, want 0900/0004", err)
	}
	ms = testutil.Scrape(t, url+"/metrics")
	if v, _ := ms.Value("muster_attach_replica_start_failures_total", attachLabels(bad)...); v < 1 {
		t.Errorf("muster_attach_replica_start_failures_total = %v, want at least 1", v)
	}
	for _, ph := range phases {
		if n, _, _ := ms.Histogram("muster_attach_start_phase_seconds", append(attachLabels(bad), "phase", ph)...); n != 0 {
			t.Errorf("phase %s of a program that exits at once: count %d, want 0", ph, n)
		}
	}
	if n, _, _ := ms.Histogram("muster_attach_start_seconds", attachLabels(bad)...); n != 0 {
		t.Errorf("muster_attach_start_seconds of a program that exits at once: count %d, want 0", n)
	}
	if n, _, _ := ms.Histogram("muster_attach_start_seconds", attachLabels(svc)...); n != 1 {
		t.Errorf("muster_attach_start_seconds of %s: count %d, want still 1", svc, n)
	}
}
