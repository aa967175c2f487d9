package testutil

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/musterhq/muster/internal/embedded"
)

// Cluster is a NATS cluster of in-process JetStream servers on loopback,
// each node on fixed (once picked at random) client and route ports with
// its own store dir, so a node can be stopped and started again as the
// same server. Everything is shut down at the end of the test.
type Cluster struct {
	t    testing.TB
	cfgs []embedded.Config

	mu      sync.Mutex
	servers []*server.Server // nil for a stopped node
}

// StartCluster starts an n-node JetStream cluster (node names N1..Nn,
// cluster "muster-test") and waits until it has a meta leader that
// knows all n peers.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	routes := make([]string, n)
	for i := range n {
		routes[i] = "127.0.0.1:" + strconv.Itoa(ports[n+i])
	}
	c := &Cluster{t: t, servers: make([]*server.Server, n)}
	for i := range n {
		c.cfgs = append(c.cfgs, embedded.Config{
			Listen:        "127.0.0.1:" + strconv.Itoa(ports[i]),
			StoreDir:      t.TempDir(),
			ServerName:    "N" + strconv.Itoa(i+1),
			ClusterName:   "muster-test",
			ClusterListen: routes[i],
			Routes:        routes,
		})
	}
	t.Cleanup(func() {
		for i := range c.cfgs {
			c.Stop(i)
		}
	})
	// Start the nodes together: each waits for its routes to be ready for
	// clients in clustered JetStream mode.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := embedded.Start(c.cfgs[i])
			c.mu.Lock()
			c.servers[i], errs[i] = s, err
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.WaitReady(n)
	return c
}

// freePorts picks n free loopback ports (held together while picking, so
// they differ).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// URL is the client URLs of all nodes, comma-separated, for a client that
// must survive the loss of any one node.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.cfgs))
	for i, cfg := range c.cfgs {
		urls[i] = "nats://" + cfg.Listen
	}
	return strings.Join(urls, ",")
}

// Server returns node i, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// Config returns the config node i was started with.
func (c *Cluster) Config(i int) embedded.Config { return c.cfgs[i] }

// Index returns the index of the node named name (as in stream and
// consumer cluster info), or -1.
func (c *Cluster) Index(name string) int {
	for i, cfg := range c.cfgs {
		if cfg.ServerName == name {
			return i
		}
	}
	return -1
}

// Stop shuts node i down (as a server does on SIGTERM: its raft groups
// hand their leadership over first) and waits until it is down.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts the stopped node i again on its ports and store dir.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	s, err := embedded.Start(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("restart node %d: %v", i, err)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
}

// MetaLeader returns the index of the node that leads the JetStream meta
// group, or -1 when none does.
func (c *Cluster) MetaLeader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.servers {
		if s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// WaitReady waits up to 30s until the cluster has a meta leader that
// knows peers peers, every running node is current, and every running node
// has a route to every other (the meta group can agree while one route of
// the mesh is still being set up: a CI run under -race saw it).
func (c *Cluster) WaitReady(peers int) {
	c.t.Helper()
	CheckFor(c.t, 30*time.Second, 10*time.Millisecond, func() error {
		l := c.MetaLeader()
		if l < 0 {
			return fmt.Errorf("no JetStream meta leader")
		}
		if got := len(c.Server(l).JetStreamClusterPeers()); got != peers {
			return fmt.Errorf("meta leader knows %d peers, want %d", got, peers)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		running := 0
		for _, s := range c.servers {
			if s != nil {
				running++
			}
		}
		for i, s := range c.servers {
			if s == nil {
				continue
			}
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("node %d not current", i)
			}
			if st := embedded.Status(s, c.cfgs[i]); len(st.Connected) != running {
				return fmt.Errorf("node %d: %s; %d nodes run", i, st, running)
			}
		}
		return nil
	})
}
