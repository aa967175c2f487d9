package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/internal/embedded"
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
