package embedded_test

import (
	"context"
	"fmt"
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
	if _, err := js.Publish(ctx, "r3.a", []byte("before")); err != nil {
		t.Fatal(err)
	}
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
