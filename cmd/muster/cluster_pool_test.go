package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/testutil"
)

// TestPoolOnCluster: a 3-node NATS cluster on loopback, a broker on two of
// the nodes and an attach manager on each: replicas are placed on the
// hosts by the service's scheme and calls are served across them; then,
// under load, the node holding the leading broker and one attach manager
// stops: no call is lost and the system keeps serving.
func TestPoolOnCluster(t *testing.T) {
	c := testutil.StartCluster(t, 3)
	ctx := testutil.Context(t, 3*time.Minute)
	url := func(i int) string { return c.Server(i).ClientURL() }
	conn := func(i int) *nats.Conn {
		// Each component starts on node i and fails over to the others.
		urls := []string{url(i)}
		for j := range 3 {
			if j != i {
				urls = append(urls, url(j))
			}
		}
		nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	var brokers []*broker.Broker
	for i := range 2 {
		sctx, cancel := context.WithTimeout(ctx, 40*time.Second) // a fresh cluster places the assets slowly under load
		b, err := broker.Start(sctx, conn(i), broker.Config{ID: fmt.Sprintf("b%d", i), Logger: discard})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
		brokers = append(brokers, b)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	managers := make([]*attach.Manager, 3)
	for i := range 3 {
		dir := t.TempDir()
		yaml := fmt.Sprintf("host:\n  name: node%d\n  state_dir: %s/state\n  temp_dir: %s/tmp\n  log_dir: %s/logs\n  grace: 2s\n  heartbeat: 300ms\n"+
			"services:\n  - service: %s\n    program: %s\n    args: [example, echo]\n    max: 2\n    capacity: 1\n    idle_timeout: 60s\n",
			i, dir, dir, dir, opsSvc, exe)
		path := filepath.Join(dir, "attach.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := attach.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		m, err := startAttach(ctx, conn(i), natsconn.Config{URL: c.URL()}, nil, cfg, discard)
		if err != nil {
			t.Fatal(err)
		}
		managers[i] = m
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = m.Shutdown(sctx)
		})
	}
	server := "--server=" + c.URL()
	run(t, nil, "service", "placement", server, opsSvc, "round-robin")
	cl, err := client.New(conn(2), client.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })

	// Three conversations at once: each replica takes one (capacity 1), and
	// round-robin puts them on different hosts.
	var convs []*client.Conv
	for i := range 3 {
		cv, _, err := cl.Open(ctx, opsSvc, []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatalf("conversation %d: %v", i, err)
		}
		convs = append(convs, cv)
	}
	hosts := map[string]int{}
	testutil.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		var l struct {
			Replicas []picture.Replica `json:"replicas"`
		}
		if err := jsonOut(run(t, nil, "replica", "ls", server, "--json"), &l); err != nil {
			return err
		}
		hosts = map[string]int{}
		for _, r := range l.Replicas {
			hosts[r.Attach]++
		}
		if len(hosts) < 2 {
			return fmt.Errorf("replicas on %v, want spread over the hosts", hosts)
		}
		return nil
	})
	t.Logf("3 conversations placed by round-robin: %v", hosts)
	for _, cv := range convs {
		if _, err := cv.Send(ctx, []byte("across hosts")); err != nil {
			t.Fatal(err)
		}
		_ = cv.End(ctx)
	}

	// Load, then the node of the leading broker (with its attach manager)
	// goes away.
	lead := -1
	for i, b := range brokers {
		if b.Leading() {
			lead = i
		}
	}
	if lead < 0 {
		t.Fatal("no broker leads")
	}
	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				r, err := cl.Call(cctx, opsSvc, []byte(fmt.Sprintf("%d-%d", w, i)))
				cancel()
				if err == nil && string(r) == fmt.Sprintf("%d-%d", w, i) {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				errMu.Lock()
				errs = append(errs, fmt.Sprint(err))
				errMu.Unlock()
			}
		})
	}
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if ok.Load() < 20 {
			return fmt.Errorf("%d calls so far", ok.Load())
		}
		return nil
	})
	stopped := time.Now()
	before := ok.Load()
	c.Stop(lead) // broker `lead` and attach manager node<lead> lose their node
	var took time.Duration
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if ok.Load() < before+20 {
			return fmt.Errorf("%d calls since the node stopped", ok.Load()-before)
		}
		took = time.Since(stopped)
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("node %d stopped under load: %d calls ok, %d failed %v; 20 more calls served %v after", lead, ok.Load(), failed.Load(), errs, took.Round(time.Millisecond))
	for _, e := range errs {
		// A call in flight across the cut may be told so (0215/0148) or find
		// its replica gone (0003/0012): never lost, never hung.
		if !strings.Contains(e, proto.CodeBrokerNotActive.String()) && !strings.Contains(e, proto.CodeLoggedOff.String()) {
			t.Errorf("call failed with %s", e)
		}
	}
	if int(failed.Load()) > 8 {
		t.Errorf("%d calls failed across one node loss", failed.Load())
	}
}

// jsonOut decodes a command's JSON output.
func jsonOut(out string, v any) error {
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return errors.New("output " + out + ": " + err.Error())
	}
	return nil
}
