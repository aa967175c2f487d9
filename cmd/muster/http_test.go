package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/testutil"
)

// httpLine is the banner line of a daemon's HTTP endpoint.
var httpLine = regexp.MustCompile(`(?m)^muster (?:up|broker|attach): http (http://\S+) \(([^)]*)\)$`)

// endpointURL returns the URL the banner in stderr names, and its paths.
func endpointURL(t *testing.T, stderr string) (string, string) {
	t.Helper()
	m := httpLine.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no HTTP endpoint in the banner:\n%s", stderr)
	}
	return m[1], m[2]
}

// TestUpHTTP: `muster up` serves /healthz (200 once up) and /metrics
// (the broker's and the attach manager's figures) at the URL its banner
// prints; the figures follow the calls made; no profiler unless asked;
// the port is closed when up returns.
func TestUpHTTP(t *testing.T) {
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("TMPDIR", t.TempDir())
	stderr, done := startUp(t, ctx, "--insecure", "--nats-listen", addr, "--data", data, "--log-level", "warn")
	url, paths := endpointURL(t, stderr.String())
	if paths != "/healthz, /metrics" {
		t.Errorf("paths %q", paths)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		code, body, err := testutil.TryHTTPGet(url + "/healthz")
		if err != nil {
			return err
		}
		if code != http.StatusOK || body != "ok\n" {
			return fmt.Errorf("/healthz %d %q", code, body)
		}
		return nil
	})
	if code, body := testutil.HTTPGet(t, url+"/healthz?debug=true"); code != http.StatusOK ||
		!strings.Contains(body, `"name": "broker.registry"`) || !strings.Contains(body, `"name": "attach.isolated"`) {
		t.Errorf("debug: %d %s", code, body)
	}

	svc := []string{"service", demo.EchoService}
	before := testutil.Scrape(t, url+"/metrics")
	for _, name := range []string{"muster_broker_registry_current", "muster_attach_max_replicas", "go_goroutines", "process_open_fds"} {
		if _, ok := before.Value(name); !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	started, _ := before.Value("muster_attach_replicas_started_total", svc...)
	if got := run(t, nil, "call", "--server=nats://"+addr, demo.EchoService, "hi"); got != "hi\n" {
		t.Fatalf("call: %q", got)
	}
	after := testutil.Scrape(t, url+"/metrics")
	if v, _ := after.Value("muster_attach_replicas_started_total", svc...); v != started+1 {
		t.Errorf("muster_attach_replicas_started_total %v after a cold call, was %v", v, started)
	}
	if v, _ := after.Value("muster_broker_replicas", svc...); v != 1 {
		t.Errorf("muster_broker_replicas %v after a cold call, want 1", v)
	}
	if code, _ := testutil.HTTPGet(t, url+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ %d without --pprof, want 404", code)
	}
	checkMetricsDocumented(t, after)

	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}
	if _, _, err := testutil.TryHTTPGet(url + "/healthz"); err == nil {
		t.Error("HTTP endpoint still answering after up returned")
	}
}

// TestUpHTTPOffAndBusy: --http "" serves nothing; a busy --http port fails
// the start, saying which flag and how to get out of it.
func TestUpHTTPOffAndBusy(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr, done := startUp(t, ctx, "--insecure", "--nats-listen", freeAddr(t), "--data", t.TempDir(), "--log-level", "warn", "--http", "")
	if httpLine.MatchString(stderr.String()) {
		t.Errorf("--http \"\" printed an endpoint:\n%s", stderr)
	}
	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r := runApp(context.Background(), nil, "up", "--insecure", "--nats-listen", freeAddr(t), "--data", t.TempDir(), "--http", busy.Addr().String())
	if r.err == nil || !strings.Contains(r.err.Error(), "--http "+busy.Addr().String()) || !strings.Contains(r.err.Error(), `--http ""`) {
		t.Fatalf("up on a busy --http port: %v", r.err)
	}
	if r := runApp(context.Background(), nil, "up", "--insecure", "--nats-listen", freeAddr(t), "--data", t.TempDir(), "--http", "", "--pprof"); r.err == nil || !strings.Contains(r.err.Error(), "--pprof needs --http") {
		t.Fatalf("--pprof without --http: %v", r.err)
	}
}

// TestUpHTTPDefault: `muster up` serves HTTP on 127.0.0.1:7070 by default
// (not NATS monitoring's 8222); broker and attach serve none unless asked.
func TestUpHTTPDefault(t *testing.T) {
	for _, tt := range []struct {
		cmd  *cli.Command
		want string
	}{{upCommand(), "127.0.0.1:7070"}, {brokerCommand(), ""}, {attachCommand(), ""}} {
		found := false
		for _, f := range tt.cmd.Flags {
			if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "http" {
				found = true
				if sf.Value != tt.want {
					t.Errorf("%s --http defaults to %q, want %q", tt.cmd.Name, sf.Value, tt.want)
				}
			}
		}
		if !found {
			t.Errorf("%s has no --http", tt.cmd.Name)
		}
	}
}

// TestBrokerHTTPPprof: `muster broker --http ADDR --pprof` serves
// /healthz and the profiler.
func TestBrokerHTTPPprof(t *testing.T) {
	s := testutil.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		a := app()
		a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), io.Discard, stderr
		done <- a.RunContext(ctx, []string{"muster", "broker", "--server", s.ClientURL(), "--log-level", "warn", "--http", "127.0.0.1:0", "--pprof"})
	}()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "muster broker ") || !httpLine.MatchString(stderr.String()) {
			return fmt.Errorf("broker not started; stderr:\n%s", stderr)
		}
		return nil
	})
	url, paths := endpointURL(t, stderr.String())
	if paths != "/healthz, /metrics, /debug/pprof/" {
		t.Errorf("paths %q", paths)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if code, body, err := testutil.TryHTTPGet(url + "/healthz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/healthz %d %q %v", code, body, err)
		}
		return nil
	})
	if code, _ := testutil.HTTPGet(t, url+"/debug/pprof/"); code != http.StatusOK {
		t.Errorf("/debug/pprof/ %d with --pprof", code)
	}
	if _, ok := testutil.Scrape(t, url+"/metrics").Value("muster_broker_registry_current"); !ok {
		t.Error("no broker metrics")
	}
	cancel()
	if err := waitReturn(t, done, "broker"); err != nil {
		t.Fatalf("broker returned %v", err)
	}
}

// checkMetricsDocumented checks that docs/OPERATIONS.md's metrics table
// lists exactly the muster_* metrics served (after a cold call every one
// is present), each with its type.
func checkMetricsDocumented(t *testing.T, served testutil.Metrics) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `(muster_\\w+)` \\| (\\w+) \\|").FindAllStringSubmatch(string(doc), -1)
	if len(rows) < 20 {
		t.Fatalf("docs/OPERATIONS.md: %d rows in the metrics table", len(rows))
	}
	documented := map[string]string{}
	for _, r := range rows {
		documented[r[1]] = r[2]
	}
	for name, f := range served {
		if !strings.HasPrefix(name, "muster_") {
			continue
		}
		typ, ok := documented[name]
		if !ok {
			t.Errorf("metric %s is not in docs/OPERATIONS.md", name)
		} else if want := strings.ToLower(f.GetType().String()); typ != want {
			t.Errorf("docs/OPERATIONS.md says %s is a %s, it is a %s", name, typ, want)
		}
	}
	for name := range documented {
		if _, ok := served[name]; !ok {
			t.Errorf("docs/OPERATIONS.md lists %s, which is not served", name)
		}
	}
}
