package embedded_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/internal/embedded"
	"github.com/musterhq/muster/internal/testutil"
)

// Three in-process servers form a JetStream cluster: a stream can have
// three replicas, and it keeps taking messages after its leader's node is
// shut down.
func TestEmbeddedCluster(t *testing.T) {
	c := testutil.StartCluster(t, 3)
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.ConnectedClusterName(); got != "muster-test" {
		t.Fatalf("cluster name %q, want muster-test", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info %+v, want a leader and 2 other replicas", info.Cluster)
	}
	// A stream just created may take a moment before its leader takes
	// messages ("no response from stream"): that is setup, not the test.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		_, err := js.Publish(pctx, "r3.a", []byte("before"), jetstream.WithMsgID("before")) // a retry is not stored twice
		return err
	})
	leader := c.Index(info.Cluster.Leader)
	c.Stop(leader)
	testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		_, err := js.Publish(pctx, "r3.a", []byte("after"))
		return err
	})
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 2 || info.Cluster.Leader == "" || c.Index(info.Cluster.Leader) == leader {
			return fmt.Errorf("%d msgs, leader %q", info.State.Msgs, info.Cluster.Leader)
		}
		return nil
	})
	c.Restart(leader)
	c.WaitReady(3)
}

func TestEmbeddedClusterConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  embedded.Config
		want string
	}{
		{embedded.Config{ClusterListen: "127.0.0.1:0"}, "need a cluster name"},
		{embedded.Config{ClusterName: "c", ServerName: "a"}, "needs a cluster listen address"},
		{embedded.Config{ClusterName: "c", ClusterListen: "127.0.0.1:0"}, "needs a server name"},
		{embedded.Config{ClusterName: "c", ServerName: "a", ClusterListen: "127.0.0.1:0", Routes: []string{"nohost"}}, "want host:port"},
		{embedded.Config{ClusterName: "c", ServerName: "a", ClusterListen: "nonsense"}, "listen address"},
	} {
		tc.cfg.Listen, tc.cfg.StoreDir = "127.0.0.1:0", t.TempDir()
		s, err := embedded.Start(tc.cfg)
		if err == nil {
			s.Shutdown()
			t.Errorf("%+v: started, want an error with %q", tc.cfg, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// Status says what a node knows of its cluster: every node connected and
// online in JetStream on a formed cluster; one node short, and still a
// quorum, after one is stopped.
func TestClusterStatus(t *testing.T) {
	c := testutil.StartCluster(t, 3)
	for i := range 3 {
		st := embedded.Status(c.Server(i), c.Config(i))
		if st.Cluster != "muster-test" || st.Node != c.Config(i).ServerName || st.Expected != 3 ||
			len(st.Connected) != 3 || st.Leader == "" {
			t.Errorf("node %d: %+v, want 3 of 3 connected with a leader", i, st)
		}
	}
	ctx := testutil.Context(t, 20*time.Second)
	st, err := embedded.WaitCluster(ctx, c.Server(0), c.Config(0), embedded.ClusterStatus.Complete, nil)
	if err != nil {
		t.Fatalf("formed cluster not complete: %v (%s)", err, st)
	}
	if !strings.Contains(st.String(), "3 of 3 nodes connected (N1, N2, N3), JetStream leader N") {
		t.Errorf("status line %q", st)
	}
	c.Stop(2)
	st, err = embedded.WaitCluster(ctx, c.Server(0), c.Config(0), func(st embedded.ClusterStatus) bool {
		return st.Quorum() && len(st.Connected) == 2 && st.Ready == 2
	}, nil)
	if err != nil {
		t.Fatalf("after stopping a node: %v (%s)", err, st)
	}
	if st.Complete() || st.Expected != 3 {
		t.Errorf("one node short: %+v, want incomplete with 3 expected", st)
	}
}

// A lone node of a new cluster has no JetStream: WaitCluster reports its
// status as it changes and ends with the context, saying why.
func TestClusterStatusLoneNode(t *testing.T) {
	routes := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	cfg := embedded.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ServerName: "A", ClusterName: "c",
		ClusterListen: routes[0], Routes: routes}
	s, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var reports []string
	st, err := embedded.WaitCluster(ctx, s, cfg, embedded.ClusterStatus.Quorum, func(st embedded.ClusterStatus) {
		reports = append(reports, st.String())
	})
	if err == nil || st.Quorum() {
		t.Fatalf("lone node has a quorum: %s", st)
	}
	want := "1 of 3 nodes connected (A), no JetStream leader yet (a new cluster elects one once all 3 nodes run, a formed one with 2)"
	if len(reports) != 1 || reports[0] != want {
		t.Errorf("reports %q, want one: %q", reports, want)
	}
}

// The node count comes from the routes: this node's own address among
// them counts once, a list of the others adds this node.
func TestClusterExpectedNodes(t *testing.T) {
	own, a, b := freeAddr(t), freeAddr(t), freeAddr(t)
	for _, tc := range []struct {
		routes []string
		want   int
	}{
		{[]string{own, a, b}, 3},
		{[]string{"nats-route://" + own, a, b}, 3},
		{[]string{a, b}, 3},
		{[]string{a}, 2},
		{[]string{a, a, "nats-route://" + a}, 2},
		{[]string{"localhost:" + strings.Split(own, ":")[1], a}, 2},
	} {
		cfg := embedded.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ServerName: "A", ClusterName: "c",
			ClusterListen: own, Routes: tc.routes}
		s, err := embedded.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := embedded.Status(s, cfg).Expected; got != tc.want {
			t.Errorf("routes %v: %d nodes expected, want %d", tc.routes, got, tc.want)
		}
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
