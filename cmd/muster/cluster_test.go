package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/internal/embedded"
	"github.com/musterhq/muster/internal/health"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/testutil"
)

// The cluster flags are checked before anything starts, and each refusal
// says what to do.
func TestClusterFlagErrors(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "shared")
	run(t, nil, "auth", "init", "--dir", shared)
	node := func(more ...string) []string {
		return append([]string{"--data", filepath.Join(t.TempDir(), "data"), "--nats-listen", "127.0.0.1:0"}, more...)
	}
	cluster := []string{"--cluster-listen", "127.0.0.1:0", "--routes", "127.0.0.1:1,127.0.0.1:2"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"cluster without keys", append([]string{"up"}, node(cluster...)...),
			[]string{"must trust the same keys", "muster auth init --dir DIR", "--keys DIR/keys", "--insecure"}},
		{"nats cluster without keys", append([]string{"nats"}, node(cluster...)...),
			[]string{"must trust the same keys", "muster auth init --dir DIR"}},
		{"routes without listen", append([]string{"nats", "--insecure", "--routes", "127.0.0.1:1"}, node()...),
			[]string{"--routes and --cluster need --cluster-listen"}},
		{"cluster name without listen", append([]string{"up", "--insecure", "--cluster", "c"}, node()...),
			[]string{"need --cluster-listen"}},
		{"keys dir without keys", append([]string{"nats", "--keys", t.TempDir()}, node()...),
			[]string{"holds no keys", "muster auth init --dir DIR"}},
		{"keys dir of auth init", append([]string{"nats", "--keys", shared}, node()...),
			[]string{"give --keys " + filepath.Join(shared, "keys")}},
		{"keys without credentials", append([]string{"nats", "--insecure", "--keys", filepath.Join(shared, "keys")}, node()...),
			[]string{"not with --insecure"}},
		{"bad name", append([]string{"nats", "--insecure", "--name", "a b"}, node()...),
			[]string{`--name "a b" has character ' '`}},
		{"cluster flags with --server", []string{"up", "--server", "nats://127.0.0.1:1", "--routes", "127.0.0.1:1"},
			[]string{"--routes configures the embedded server: not with --server"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runApp(context.Background(), nil, tc.args...)
			if r.err == nil {
				t.Fatalf("muster %s succeeded", strings.Join(tc.args, " "))
			}
			for _, w := range tc.want {
				if !strings.Contains(r.err.Error(), w) {
					t.Errorf("error %q lacks %q", r.err, w)
				}
			}
			if strings.Contains(r.stderr.String(), "muster up: NATS") || strings.Contains(r.stderr.String(), "muster nats: NATS") {
				t.Errorf("a NATS server started:\n%s", r.stderr)
			}
		})
	}
}

// A node whose new cluster lacks its other nodes has no JetStream: `muster
// up` says it waits for the cluster and, after --cluster-wait, fails
// saying what to check; `muster broker` against it does the same.
func TestClusterWaitsForQuorum(t *testing.T) {
	routes := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	r := runApp(context.Background(), nil, "up", "--insecure", "--name", "A", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0",
		"--cluster-listen", routes[0], "--routes", strings.Join(routes, ","), "--cluster-wait", "300ms", "--http", "", "--log-level", "error")
	if r.err == nil {
		t.Fatal("up without a quorum started")
	}
	for _, want := range []string{
		"muster up: node:    A of NATS cluster muster\n",
		"muster up: cluster: routes on " + routes[0] + " (no user credentials: keep them on a private network); routes to " + strings.Join(routes, ", ") + "\n",
		"muster up: waiting for NATS cluster muster: 1 of 3 nodes connected (A), no JetStream leader yet (a new cluster elects one once all 3 nodes run, a formed one with 2)\n",
	} {
		if !strings.Contains(r.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	for _, want := range []string{"NATS cluster muster has no JetStream after 300ms: 1 of 3 nodes connected", "start the other nodes", "--routes", "--name"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q lacks %q", r.err, want)
		}
	}
	if strings.Contains(r.stderr.String(), "broker") {
		t.Errorf("a broker started without JetStream:\n%s", r.stderr)
	}

	// A broker against a lone node waits for JetStream, saying so.
	cfg := embedded.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ServerName: "B", ClusterName: "c",
		ClusterListen: routes[1], Routes: routes}
	s, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	start := time.Now()
	r = runApp(context.Background(), nil, "broker", "--server", s.ClientURL(), "--cluster-wait", "2500ms", "--log-level", "error")
	if r.err == nil {
		t.Fatal("broker without JetStream started")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("broker gave up after %v, want about its --cluster-wait of 2.5s", took)
	}
	if want := "muster broker: waiting up to 2.5s for JetStream of NATS cluster c (via " + s.ClientURL(); !strings.Contains(r.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	if want := "JetStream of NATS cluster c (via " + s.ClientURL() + ") did not answer within 2.5s"; !strings.Contains(r.err.Error(), want) {
		t.Errorf("error %q lacks %q", r.err, want)
	}
}

// `muster nats` alone is a single JetStream server: it says where its
// data and credentials are, is ready at once, reports JetStream on
// /healthz, and stops on its context.
func TestNATSStandalone(t *testing.T) {
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		a := app()
		a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), &syncBuffer{}, stderr
		done <- a.RunContext(ctx, []string{"muster", "nats", "--nats-listen", addr, "--data", data, "--http", "127.0.0.1:0", "--log-level", "warn"})
	}()
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "muster nats: ready\n") {
			return fmt.Errorf("not ready:\n%s", stderr)
		}
		return nil
	})
	for _, want := range []string{
		"muster nats: NATS nats://" + addr + " (embedded, with credentials)\n",
		"muster nats: data:        " + data + " (NATS JetStream store; signing keys in keys/)\n",
		"muster nats: credentials: " + filepath.Join(data, "creds", "<role>.creds"),
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr.String(), "node:") || strings.Contains(stderr.String(), "waiting") {
		t.Errorf("a single server talks of a cluster:\n%s", stderr)
	}
	m := regexp.MustCompile(`muster nats: http (http://\S+)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no http line:\n%s", stderr)
	}
	code, body := testutil.HTTPGet(t, m[1]+"/healthz?debug=true")
	var rep health.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != http.StatusOK ||
		!slices.ContainsFunc(rep.Checks, func(r health.Result) bool {
			return r.Name == "nats.jetstream" && r.OK && r.Detail == "JetStream enabled"
		}) {
		t.Errorf("/healthz: %d %s", code, body)
	}
	// The admin credentials it wrote work, JetStream included.
	nc, err := natsconn.Config{URL: "nats://" + addr, CredsFile: filepath.Join(data, "creds", "admin.creds")}.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(testutil.Context(t, 5*time.Second)); err != nil {
		t.Errorf("JetStream account info: %v", err)
	}
	cancel()
	if err := waitReturn(t, done, "nats"); err != nil {
		t.Errorf("nats returned %v", err)
	}
	if !strings.Contains(stderr.String(), "muster nats: stopping\n") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

// A cluster node's nats.jetstream check passes while its cluster has a
// JetStream leader, naming it, and fails without a majority.
func TestJetStreamCheckCluster(t *testing.T) {
	c := testutil.StartCluster(t, 3)
	n := &node{server: c.Server(0), cfg: c.Config(0)}
	check := jetStreamCheck(n)
	// A node may see its last route a moment after the cluster is up.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		detail, err := check.Run(context.Background())
		if err != nil || !strings.HasPrefix(detail, "NATS cluster muster-test: 3 of 3 nodes connected (N1, N2, N3), JetStream leader N") {
			return fmt.Errorf("formed cluster: %q, %v", detail, err)
		}
		return nil
	})
	c.Stop(1)
	c.Stop(2)
	testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := check.Run(context.Background())
		if err == nil {
			return fmt.Errorf("check passes with 1 node of 3")
		}
		if !strings.Contains(err.Error(), "NATS cluster muster-test: 1 of 3 nodes connected (N1)") {
			return fmt.Errorf("check fails with %v", err)
		}
		return nil
	})
}
