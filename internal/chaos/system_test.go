package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/embedded"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

var long = flag.Bool("chaos.long", false, "run each scenario longer and with more load")

func TestMain(m *testing.M) {
	runRole()
	flag.Parse()
	os.Exit(m.Run())
}

// scale is the short form's figure, or the long form's.
func scale[T any](short, longForm T) T {
	if *long {
		return longForm
	}
	return short
}

const service = "CHAOS/ECHO/X"

// system is one Muster system under test: an in-process NATS server that
// can be restarted on the same port and store, and brokers and attach
// managers as child processes of the test binary.
type system struct {
	t    *testing.T
	dir  string
	run  string // CHAOS_RUN: marks this test's replica processes
	exec string // the replicas' execution log

	mu      sync.Mutex
	srv     *server.Server
	port    int
	cluster *testutil.Cluster // instead of srv, when the system runs on a cluster
	kids    []*child
	config  string // the attach manager's config file
}

type child struct {
	role string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// newSystem starts NATS and writes an attach config for service with at
// most maxReplicas replicas.
func newSystem(t *testing.T, maxReplicas int) *system {
	return newSystemOn(t, maxReplicas, 0)
}

// newSystemOn is newSystem on a cluster of nodes NATS servers (0: one
// standalone server).
func newSystemOn(t *testing.T, maxReplicas, nodes int) *system {
	s := &system{t: t, dir: t.TempDir(), run: fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())}
	s.exec = filepath.Join(s.dir, "exec.log")
	if nodes > 0 {
		s.cluster = testutil.StartCluster(t, nodes)
		s.createAssets()
	} else {
		s.startNATS(0)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`host:
  name: chaos
  max_replicas: %d
  state_dir: %s/state
  temp_dir: %s/tmp
  log_dir: %s/logs
  heartbeat: 200ms
  grace: 2s
services:
  - service: %s
    program: %s
    args: ["-test.run=^$"]
    max: %d
    idle_timeout: 60s
    env: {%s: replica, %s: %q, %s: %q, GORACE: "atexit_sleep_ms=0"}
`, maxReplicas, s.dir, s.dir, s.dir, service, exe, maxReplicas, roleEnv, execEnv, s.exec, runEnv, s.run)
	s.config = filepath.Join(s.dir, "attach.yaml")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

func (s *system) url() string {
	if s.cluster != nil {
		return s.cluster.URL()
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", s.port)
}

// startNATS starts the server on port (0: a free one) with the system's store.
func (s *system) startNATS(port int) {
	s.t.Helper()
	listen := "127.0.0.1:-1"
	if port != 0 {
		listen = "127.0.0.1:" + strconv.Itoa(port)
	}
	srv, err := embedded.Start(embedded.Config{Listen: listen, StoreDir: filepath.Join(s.dir, "js")})
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.srv, s.port = srv, srv.Addr().(*net.TCPAddr).Port
	s.mu.Unlock()
}

// stopNATS shuts the server down.
func (s *system) stopNATS() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// start runs the test binary as role with the system's NATS settings.
func (s *system) start(role string) *child {
	s.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	n := len(s.kids)
	s.mu.Unlock()
	c := &child{role: role, done: make(chan struct{}), log: filepath.Join(s.dir, fmt.Sprintf("%s-%d.log", role, n))}
	f, err := os.Create(c.log)
	if err != nil {
		s.t.Fatal(err)
	}
	c.cmd = exec.Command(exe, "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, proto.EnvPrefix) && !strings.HasPrefix(kv, "CHAOS_") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.cmd.Env = append(c.cmd.Env, roleEnv+"="+role, configEnv+"="+s.config, runEnv+"="+s.run,
		proto.EnvURL+"="+s.url(), "GORACE=atexit_sleep_ms=0")
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); f.Close(); close(c.done) }()
	s.mu.Lock()
	s.kids = append(s.kids, c)
	s.mu.Unlock()
	return c
}

// kill sends SIGKILL and waits for the process to go.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// stop sends SIGTERM and waits up to d; it reports whether the process
// went in time (it is killed if not).
func (c *child) stop(d time.Duration) bool {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		c.kill()
		return false
	}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// close stops every child and the server, then fails the test if a
// replica of this system survived its attach manager.
func (s *system) close() {
	s.mu.Lock()
	kids := s.kids
	s.mu.Unlock()
	for i := len(kids) - 1; i >= 0; i-- { // attach managers before brokers
		c := kids[i]
		if !c.exited() && !c.stop(25*time.Second) {
			s.t.Errorf("%s did not stop within 25s of SIGTERM", c.role)
		}
		if s.t.Failed() {
			if b, err := os.ReadFile(c.log); err == nil && len(b) > 0 {
				s.t.Logf("%s log (last 3000 bytes):\n%s", c.role, tail(b, 3000))
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := s.replicaPIDs()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.t.Errorf("replica processes outlived every attach manager: %v (killed now)", left)
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stopNATS()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// replicaPIDs lists the live processes started for this system as
// replicas, found by the CHAOS_RUN mark in their environment.
func (s *system) replicaPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	mark := []byte(runEnv + "=" + s.run + "\x00")
	role := []byte(roleEnv + "=replica\x00")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, mark) || !bytes.Contains(env, role) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if f := bytes.Fields(st[bytes.LastIndexByte(st, ')')+1:]); len(f) > 0 && string(f[0]) == "Z" {
				continue // a zombie: dead, not yet reaped by its manager
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// connect opens a client connection with Muster's reconnect settings.
func (s *system) connect() *nats.Conn {
	s.t.Helper()
	nc, err := natsconn.Config{URL: s.url(), Name: "chaos"}.Connect()
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

func (s *system) client() *client.Client {
	s.t.Helper()
	c, err := client.New(s.connect())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// attachRecords returns the attach managers' registrations.
func (s *system) attachRecords(ctx context.Context, nc *nats.Conn) map[string]proto.AttachInfo {
	out := map[string]proto.AttachInfo{}
	js, err := jetstream.New(nc)
	if err != nil {
		return out
	}
	kv, err := js.KeyValue(ctx, proto.AttachBucket)
	if err != nil {
		return out
	}
	keys, _ := kv.Keys(ctx)
	for _, k := range keys {
		if e, err := kv.Get(ctx, k); err == nil {
			var ai proto.AttachInfo
			if json.Unmarshal(e.Value(), &ai) == nil {
				out[k] = ai
			}
		}
	}
	return out
}

// waitReady waits until a call to the service succeeds.
func (s *system) waitReady(c *client.Client, within time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < within {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Call(ctx, service, payload("ready", 0))
		cancel()
		if err == nil {
			return time.Since(start)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("no successful call within %v: %v", within, last)
	return 0
}

// executions counts how often each request id was executed.
func (s *system) executions() map[string]int {
	b, _ := os.ReadFile(s.exec)
	n := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			n[l]++
		}
	}
	return n
}

// createAssets creates the queue stream and the KV buckets before any
// daemon starts, as an operator would on a new cluster: on a freshly
// formed cluster their first creation occasionally takes longer than a
// daemon's 30 s start budget (docs/RELIABILITY.md, known limits).
func (s *system) createAssets() {
	s.t.Helper()
	nc := s.connect()
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := streams.EnsureQueue(ctx, js); err != nil {
		s.t.Fatalf("queue stream: %v", err)
	}
	for _, b := range []string{proto.ReplicaBucket, proto.AttachBucket} {
		if _, err := streams.EnsureBucket(ctx, js, b); err != nil {
			s.t.Fatalf("bucket %s: %v", b, err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		s.t.Logf("creating the assets on the new cluster took %v", d.Round(time.Millisecond))
	}
}

// registeredPIDs lists the PIDs of the replicas registered now (their
// records in the replica bucket): the healthy ones, as opposed to
// processes still starting.
func (s *system) registeredPIDs(ctx context.Context, nc *nats.Conn) []int {
	var pids []int
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	kv, err := js.KeyValue(ctx, proto.ReplicaBucket)
	if err != nil {
		return nil
	}
	keys, _ := kv.Keys(ctx)
	for _, k := range keys {
		if e, err := kv.Get(ctx, k); err == nil {
			var ri proto.ReplicaInfo
			if json.Unmarshal(e.Value(), &ri) == nil && ri.PID > 0 {
				pids = append(pids, ri.PID)
			}
		}
	}
	return pids
}
