package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/testutil"
)

// TestClusterPool: a `muster nats` and two `muster up`, real processes on
// loopback sharing keys made by `muster auth init`, form a 3-node
// JetStream cluster; Muster's assets get 3 copies; a client with one
// node's client.creds gets cold calls served through any node; and after
// the node leading the queue stream is killed with its replicas (SIGKILL,
// a machine lost) the other two keep serving, queued calls included.
func TestClusterPool(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "shared")
	run(t, nil, "auth", "init", "--dir", shared)
	addrs := freeAddrs(t, 6)
	clients, routes := addrs[:3], addrs[3:]
	env := []string{"TMPDIR=" + t.TempDir()}
	var nodes [3]*child
	var data [3]string
	start := time.Now()
	for i := range 3 {
		data[i] = filepath.Join(t.TempDir(), "data")
		cmd := "up"
		if i == 0 {
			cmd = "nats"
		}
		nodes[i] = spawnChild(t, env, cmd, "--name", "N"+strconv.Itoa(i+1), "--keys", filepath.Join(shared, "keys"),
			"--data", data[i], "--nats-listen", clients[i], "--cluster-listen", routes[i], "--routes", strings.Join(routes, ","),
			"--http", "", "--log-level", "warn") // no more random ports: they might take one of addrs
	}
	all := "nats://" + strings.Join(clients, ",nats://")
	admin := filepath.Join(data[1], "creds", "admin.creds")
	t.Cleanup(func() {
		if t.Failed() {
			clusterDiagnostics(t, all, admin, nodes[:])
		}
	})
	// Cluster formation is slow under load: up to 40 s.
	nodes[0].waitFor(t, "muster nats: ready", 40*time.Second)
	for _, n := range nodes[1:] {
		n.waitFor(t, "try: muster call", 40*time.Second)
	}
	formed := time.Since(start)

	// Each banner names the node, its route address and the routes.
	for i, n := range nodes {
		who := "muster up"
		if i == 0 {
			who = "muster nats"
		}
		for _, re := range []string{
			who + `: NATS nats://` + regexp.QuoteMeta(clients[i]) + ` \(embedded node N` + strconv.Itoa(i+1) + ` of cluster muster, with credentials\)\n`,
			who + `: node: +N` + strconv.Itoa(i+1) + ` of NATS cluster muster\n`,
			who + `: cluster: +routes on ` + regexp.QuoteMeta(routes[i]) + ` .*; routes to ` + regexp.QuoteMeta(strings.Join(routes, ", ")) + `\n`,
			who + `: NATS cluster muster ready( after [0-9.]+m?s)?: 3 of 3 nodes connected \(N1, N2, N3\), JetStream leader N[123]\n`,
		} {
			if !regexp.MustCompile(re).MatchString(n.stderr.String()) {
				t.Errorf("node %d: stderr lacks %s:\n%s", i+1, re, n.stderr)
			}
		}
	}
	// The try line names every node's client URL.
	for _, c := range clients {
		if !strings.Contains(nodes[2].stderr.String(), "nats://"+c) {
			t.Errorf("N3's banner lacks nats://%s:\n%s", c, nodes[2].stderr)
		}
	}

	// One instance, one state: a node on a data dir in use is refused.
	r := runApp(context.Background(), nil, "nats", "--insecure", "--data", data[1], "--nats-listen", "127.0.0.1:0")
	if r.err == nil || !strings.Contains(r.err.Error(), "in use by another muster up or muster nats (pid "+strconv.Itoa(nodes[1].cmd.Process.Pid)+")") {
		t.Errorf("second node on N2's data dir: %v", r.err)
	}

	// Every JetStream asset has 3 copies.
	nc, err := natsconn.Config{URL: "nats://" + clients[0], CredsFile: admin, Name: t.Name()}.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := testutil.Context(t, 60*time.Second)
	seen := map[string]bool{}
	victim := -1 // the node leading the queue stream
	for name := range js.StreamNames(ctx).Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas (cluster %+v), want 3", name, info.Config.Replicas, info.Cluster)
		}
		seen[name] = true
		if name == proto.QueueStream && info.Cluster != nil && len(info.Cluster.Leader) == 2 {
			victim, _ = strconv.Atoi(info.Cluster.Leader[1:])
			victim--
		}
	}
	if victim < 0 {
		t.Fatalf("no leader of %s", proto.QueueStream)
	}
	for _, want := range []string{proto.QueueStream, "KV_" + proto.ReplicaBucket, "KV_" + proto.AttachBucket} {
		if !seen[want] {
			t.Errorf("no stream %s (have %v)", want, seen)
		}
	}

	// Cold calls through the `muster nats` node and through N3, with
	// N3's and N2's client.creds: every node trusts the same keys.
	creds := func(i int) string { return filepath.Join(data[i], "creds", "client.creds") }
	if got := run(t, nil, "call", "--server", "nats://"+clients[0], "--creds", creds(2), "--timeout", "20s", demo.EchoService, "hello"); got != "hello\n" {
		t.Errorf("echo through N1 answered %q", got)
	}
	if got := run(t, nil, "call", "--server", "nats://"+clients[2], "--creds", creds(1), "--timeout", "20s", sleepService, "1ms"); got != "slept 1ms\n" {
		t.Errorf("sleep through N3 answered %q", got)
	}

	// The node leading the queue stream is lost: its process and its
	// replicas are killed.
	var reps struct {
		Replicas []picture.Replica `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(run(t, nil, "replica", "ls", "--server", all, "--creds", admin, "--json")), &reps); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	if err := nodes[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, rep := range reps.Replicas {
		if rep.Host == "N"+strconv.Itoa(victim+1) && rep.PID > 0 {
			_ = syscall.Kill(-rep.PID, syscall.SIGKILL) // its process group
		}
	}
	<-nodes[victim].exited

	// The other two serve again: first call, then a burst that queues.
	var alive []string
	for i, c := range clients {
		if i != victim {
			alive = append(alive, "nats://"+c)
		}
	}
	survivors := strings.Join(alive, ",")
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		r := runApp(context.Background(), nil, "call", "--server", survivors, "--creds", creds(victim), "--timeout", "3s", demo.EchoService, "again")
		if r.err != nil {
			return r.err
		}
		if got := r.stdout.String(); got != "again\n" {
			return fmt.Errorf("echo answered %q", got)
		}
		return nil
	})
	servedAgain := time.Since(lost)
	cnc, err := natsconn.Config{URL: survivors, CredsFile: creds((victim + 1) % 3), Name: t.Name()}.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer cnc.Close()
	cl, err := client.New(cnc)
	if err != nil {
		t.Fatal(err)
	}
	// A burst that queues needs the queue stream, whose leader was on
	// the lost node: until the others elect a new one the broker turns
	// calls it cannot queue away as retryable (0900/0005), and a call
	// handed to a replica of the lost node learns it is gone (0003/0012);
	// then every call of a burst is served.
	const burst = 6 // more than the survivors' warm sleep replicas: some wait in the queue
	var refusedTries int
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		var wg sync.WaitGroup
		errs := make([]error, burst)
		for i := range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				reply, err := cl.Call(cctx, sleepService, []byte("100ms"))
				if err == nil && string(reply) != "slept 100ms" {
					err = fmt.Errorf("reply %q", reply)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for _, err := range errs {
			var pe *proto.Error
			if err != nil && !(errors.As(err, &pe) && (pe.Code == proto.CodeUnavailable || pe.Code == proto.CodeLoggedOff)) {
				t.Fatalf("a call of the burst after the loss: %v; want a reply, or at once a coded 0900/0005 (retry) or 0003/0012 (replica gone)", err)
			}
		}
		for _, err := range errs {
			if err != nil {
				refusedTries++
				return err
			}
		}
		return nil
	})
	t.Logf("cluster formed (3 nodes, all started at once) in %v; after SIGKILL of N%d (leader of the queue stream) a warm call was served in %v, "+
		"a burst of %d calls that queue in %v (%d tries refused before)",
		formed.Round(time.Millisecond), victim+1, servedAgain.Round(time.Millisecond), burst, time.Since(lost).Round(time.Millisecond), refusedTries)
}

// clusterDiagnostics logs what the nodes still running say of the queue
// stream and their consumers, and the nodes' stderr, to tell a NATS
// election that does not end from a Muster component that does not
// recover.
func clusterDiagnostics(t *testing.T, urls, creds string, nodes []*child) {
	for i, n := range nodes {
		t.Logf("N%d stderr:\n%s", i+1, n.stderr)
	}
	nc, err := natsconn.Config{URL: urls, CredsFile: creds, Name: t.Name()}.Connect()
	if err != nil {
		t.Logf("diagnostics: %v", err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, proto.QueueStream)
	if err != nil {
		t.Logf("diagnostics: stream %s: %v", proto.QueueStream, err)
		return
	}
	b, _ := json.Marshal(s.CachedInfo().Cluster)
	t.Logf("diagnostics: stream %s: %d messages, cluster %s", proto.QueueStream, s.CachedInfo().State.Msgs, b)
	for name := range s.ConsumerNames(ctx).Name() {
		c, err := s.Consumer(ctx, name)
		if err != nil {
			t.Logf("diagnostics: consumer %s: %v", name, err)
			continue
		}
		ci := c.CachedInfo()
		b, _ := json.Marshal(ci.Cluster)
		t.Logf("diagnostics: consumer %s: %d pending, %d waiting pulls, %d ack pending, cluster %s", name, ci.NumPending, ci.NumWaiting, ci.NumAckPending, b)
	}
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago (held together while picked).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out
}
