package broker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/httpd"
	"github.com/musterhq/muster/internal/testutil"
)

// serveHTTP serves b's health checks and metrics on a random port, as
// `muster broker --http` does, and returns the base URL.
func serveHTTP(t *testing.T, b *broker.Broker) string {
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
	if err := srv.Add(b.HealthChecks(), b.Collector()); err != nil {
		t.Fatal(err)
	}
	srv.Ready()
	return srv.URL()
}

// healthz returns nil when GET /healthz answers 200, else an error with
// what it answered.
func healthz(url string, want int) error {
	code, body, err := testutil.TryHTTPGet(url + "/healthz")
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("/healthz %d %q, want %d", code, body, want)
	}
	return nil
}

// TestHealthzAcrossNATSRestart: /healthz is 200 while the broker can work,
// 503 (naming NATS) while the NATS server is down, answering within about
// a second all the same, and 200 again within 2 s of the server's return.
// A scrape while NATS is down does not hang either: the registry and the
// queue are reported unavailable.
func TestHealthzAcrossNATSRestart(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := connect(t, s)
	b, err := broker.Start(testutil.Context(t, 10*time.Second), nc, broker.Config{Logger: harness.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	url := serveHTTP(t, b)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error { return healthz(url, http.StatusOK) })
	ms := testutil.Scrape(t, url+"/metrics")
	for _, name := range []string{"muster_broker_registry_current", "muster_broker_queue_readable"} {
		if v, ok := ms.Value(name, "broker", b.ID()); v != 1 || !ok {
			t.Errorf("%s = %v (present %v) while healthy, want 1", name, v, ok)
		}
	}

	s = testutil.RestartNATS(t, s, func() {
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error { return healthz(url, http.StatusServiceUnavailable) })
		start := time.Now()
		code, body := testutil.HTTPGet(t, url+"/healthz")
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("/healthz took %v while NATS was down", took)
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "broker.nats: not connected to NATS") || !strings.Contains(body, "broker.registry: ") {
			t.Errorf("while NATS is down: %d %q", code, body)
		}
		start = time.Now()
		ms := testutil.Scrape(t, url+"/metrics")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("/metrics took %v while NATS was down", took)
		}
		for _, name := range []string{"muster_broker_registry_current", "muster_broker_queue_readable"} {
			if v, ok := ms.Value(name); v != 0 || !ok {
				t.Errorf("%s = %v (present %v) while NATS is down, want 0", name, v, ok)
			}
		}
	})
	defer func() { // before the new server's cleanup: Shutdown drains through it
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		// A broker shutting down cannot do its job.
		if err := healthz(url, http.StatusServiceUnavailable); err != nil {
			t.Errorf("after Shutdown: %v", err)
		}
	}()
	back := time.Now()
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error { return healthz(url, http.StatusOK) })
	t.Logf("/healthz 200 %v after NATS was back", time.Since(back).Round(time.Millisecond))
}

// TestMetricsCountQueuedCalls: the per-service figures on /metrics are
// the broker's, read at scrape: calls queued for a service an attach
// manager offers (no replica runs) raise its request and notification
// counters and its pending requests.
func TestMetricsCountQueuedCalls(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/HTTP/QUEUED"
	harness.RegisterAttach(t, e, "http-attach", svc)
	url := serveHTTP(t, e.Broker)
	labels := []string{"broker", e.Broker.ID(), "service", svc}

	ms := testutil.Scrape(t, url+"/metrics")
	if v, ok := ms.Value("muster_broker_requests_queued_total", labels...); !ok || v != 0 {
		t.Fatalf("muster_broker_requests_queued_total = %v (present %v) before any call, want 0", v, ok)
	}
	if f := ms["muster_broker_requests_queued_total"]; f.GetType().String() != "COUNTER" {
		t.Errorf("muster_broker_requests_queued_total is a %v", f.GetType())
	}
	if _, ok := ms.Value("go_goroutines"); !ok {
		t.Error("no Go runtime metrics")
	}

	const calls = 3
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := e.Client.Call(ctx, svc, []byte("x")) // no replica: queued, it waits until its deadline
		cancel()
		if err == nil {
			t.Fatal("a call was answered with no replica running")
		}
	}
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		ms := testutil.Scrape(t, url+"/metrics")
		for _, want := range []struct {
			name string
			min  float64
		}{
			{"muster_broker_requests_queued_total", calls},
			{"muster_broker_notifications_total", 1},
			{"muster_broker_pending_requests_high_water", 1},
			{"muster_broker_last_notification_timestamp_seconds", float64(time.Now().Add(-time.Minute).Unix())},
		} {
			if v, ok := ms.Value(want.name, labels...); !ok || v < want.min {
				return fmt.Errorf("%s = %v (present %v), want at least %v", want.name, v, ok, want.min)
			}
		}
		if v, _ := ms.Value("muster_broker_requests_queued_total", labels...); v != calls {
			return fmt.Errorf("muster_broker_requests_queued_total = %v, want %d", v, calls)
		}
		return nil
	})
}
