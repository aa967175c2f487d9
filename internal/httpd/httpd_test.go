package httpd_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/musterhq/muster/internal/health"
	"github.com/musterhq/muster/internal/httpd"
	"github.com/musterhq/muster/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T, opts httpd.Options) *httpd.Server {
	t.Helper()
	s, err := httpd.Listen("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// check is a health check that fails with the reason in fail ("": passes).
func check(name string, fail *atomic.Value) health.Check {
	fail.Store("")
	return health.Check{Name: name, Run: func(context.Context) (string, error) {
		if why := fail.Load().(string); why != "" {
			return "", errors.New(why)
		}
		return name + " fine", nil
	}}
}

// TestHealthz: 503 "starting" until Ready, then 200 "ok" while every
// check passes and 503 with the failed check's reason when one fails;
// ?debug=true gives every check as JSON, with the same status codes.
func TestHealthz(t *testing.T) {
	s := listen(t, httpd.Options{})
	var natsErr, otherErr atomic.Value
	if err := s.Add([]health.Check{check("nats", &natsErr), check("other", &otherErr)}, nil); err != nil {
		t.Fatal(err)
	}
	url := s.URL() + "/healthz"
	if code, body := testutil.HTTPGet(t, url); code != http.StatusServiceUnavailable || body != "started: starting\n" {
		t.Fatalf("before Ready: %d %q", code, body)
	}
	s.Ready()
	if code, body := testutil.HTTPGet(t, url); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("healthy: %d %q", code, body)
	}
	natsErr.Store("not connected to NATS (RECONNECTING)")
	if code, body := testutil.HTTPGet(t, url); code != http.StatusServiceUnavailable || body != "nats: not connected to NATS (RECONNECTING)\n" {
		t.Fatalf("unhealthy: %d %q", code, body)
	}

	code, body := testutil.HTTPGet(t, url+"?debug=true")
	var rep struct {
		Status string `json:"status"`
		Checks []struct {
			Name   string   `json:"name"`
			OK     bool     `json:"ok"`
			Detail string   `json:"detail"`
			TookMS *float64 `json:"took_ms"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("debug body is not JSON: %v\n%s", err, body)
	}
	if code != http.StatusServiceUnavailable || rep.Status != "fail" || len(rep.Checks) != 3 {
		t.Fatalf("debug: %d %s", code, body)
	}
	want := []struct {
		name, detail string
		ok           bool
	}{{"started", "started", true}, {"nats", "not connected to NATS (RECONNECTING)", false}, {"other", "other fine", true}}
	for i, w := range want {
		c := rep.Checks[i]
		if c.Name != w.name || c.OK != w.ok || c.Detail != w.detail || c.TookMS == nil {
			t.Errorf("check %d: %+v, want %+v", i, c, w)
		}
	}
	natsErr.Store("")
	if code, body := testutil.HTTPGet(t, url+"?debug=true"); code != http.StatusOK || !strings.Contains(body, `"status": "ok"`) {
		t.Fatalf("debug when healthy: %d %s", code, body)
	}
}

// TestHealthzBounded: a check that hangs fails as timed out, and the
// answer comes within about health.MaxTimeout.
func TestHealthzBounded(t *testing.T) {
	s := listen(t, httpd.Options{})
	release := make(chan struct{})
	defer close(release)
	hang := health.Check{Name: "hang", Run: func(context.Context) (string, error) { <-release; return "", nil }}
	if err := s.Add([]health.Check{hang}, nil); err != nil {
		t.Fatal(err)
	}
	s.Ready()
	start := time.Now()
	code, body := testutil.HTTPGet(t, s.URL()+"/healthz")
	if took := time.Since(start); took > health.MaxTimeout+time.Second {
		t.Errorf("answered after %v", took)
	}
	if code != http.StatusServiceUnavailable || body != "hang: timed out after 1s\n" {
		t.Fatalf("%d %q", code, body)
	}
}

// TestPprofOnlyWhenAsked: /debug/pprof/ is 404 unless Options.Pprof.
func TestPprofOnlyWhenAsked(t *testing.T) {
	off := listen(t, httpd.Options{})
	if code, _ := testutil.HTTPGet(t, off.URL()+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof off: %d, want 404", code)
	}
	if code, _ := testutil.HTTPGet(t, off.URL()+"/nothing"); code != http.StatusNotFound {
		t.Errorf("unknown path: %d, want 404", code)
	}
	on := listen(t, httpd.Options{Pprof: true})
	if code, body := testutil.HTTPGet(t, on.URL()+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on: %d %.200s", code, body)
	}
	if code, _ := testutil.HTTPGet(t, on.URL()+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK {
		t.Errorf("pprof goroutine: %d", code)
	}
}

// counting is a collector that reads a figure at scrape time.
type counting struct {
	desc *prometheus.Desc
	n    func() float64
}

func (c counting) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c counting) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, c.n())
}

// TestMetrics: /metrics serves the Go and process collectors and the
// components' own, read at each scrape; a collector describing a metric
// already served is refused.
func TestMetrics(t *testing.T) {
	s := listen(t, httpd.Options{})
	var n atomic.Int64
	c := counting{prometheus.NewDesc("muster_test_things_total", "Things.", nil, nil), func() float64 { return float64(n.Load()) }}
	if err := s.Add(nil, c); err != nil {
		t.Fatal(err)
	}
	ms := testutil.Scrape(t, s.URL()+"/metrics")
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "muster_test_things_total"} {
		if _, ok := ms.Value(name); !ok {
			t.Errorf("no %s", name)
		}
	}
	n.Store(3)
	if v, _ := testutil.Scrape(t, s.URL()+"/metrics").Value("muster_test_things_total"); v != 3 {
		t.Errorf("muster_test_things_total %v after it changed, want 3", v)
	}
	if err := s.Add(nil, c); err == nil {
		t.Error("a second collector of muster_test_things_total was accepted")
	}
}

// TestListenBusy: a busy port fails at once, naming the flag and the way
// out.
func TestListenBusy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = httpd.Listen(l.Addr().String(), httpd.Options{})
	if err == nil || !strings.Contains(err.Error(), "--http "+l.Addr().String()) || !strings.Contains(err.Error(), `--http ""`) {
		t.Fatalf("err %v", err)
	}
	if _, err := httpd.Listen("nonsense", httpd.Options{}); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Fatalf("bad address: %v", err)
	}
}
