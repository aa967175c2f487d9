package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

const opsSvc = "EXAMPLE/ECHO/ECHO"

// opsSystem is a real system: NATS, two brokers and an attach manager
// (host "ops-host") that starts `<test binary> example echo` replicas.
type opsSystem struct {
	url      string
	server   string // --server flag
	nc       *nats.Conn
	brokers  []*broker.Broker
	m        *attach.Manager
	c        *client.Client
	logDir   string
	stateDir string
}

func startOps(t *testing.T) *opsSystem {
	t.Helper()
	s := testutil.StartNATS(t)
	o := &opsSystem{url: s.ClientURL(), server: "--server=" + s.ClientURL()}
	ctx := testutil.Context(t, 30*time.Second)
	for i := range 2 {
		nc := testutil.Connect(t, s)
		b, err := broker.Start(ctx, nc, broker.Config{ID: fmt.Sprintf("b%d", i+1), Logger: discard, Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
		o.brokers = append(o.brokers, b)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	o.logDir, o.stateDir = filepath.Join(dir, "logs"), filepath.Join(dir, "state")
	yaml := fmt.Sprintf("host:\n  name: ops-host\n  state_dir: %s\n  temp_dir: %s/tmp\n  log_dir: %s\n  grace: 5s\n  heartbeat: 300ms\n"+
		"services:\n  - service: %s\n    program: %s\n    args: [example, echo]\n    max: 1\n    capacity: 4\n    idle_timeout: 60s\n",
		o.stateDir, dir, o.logDir, opsSvc, exe)
	path := filepath.Join(dir, "attach.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := attach.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	anc := testutil.Connect(t, s)
	if o.m, err = startAttach(ctx, anc, natsconn.Config{URL: s.ClientURL()}, nil, cfg, discard); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = o.m.Shutdown(sctx)
	})
	// The client's inbox names it, as with Muster's permissions (§12).
	if o.nc, err = nats.Connect(s.ClientURL(), nats.CustomInboxPrefix("_INBOX.alice")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.nc.Close)
	if o.c, err = client.New(o.nc, client.WithTimeout(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.c.Close() })
	return o
}

// listJSON runs a listing with --json and decodes it into v.
func (o *opsSystem) listJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := run(t, nil, append([]string{args[0], args[1], o.server, "--json"}, args[2:]...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("muster %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (o *opsSystem) service(t *testing.T) picture.Service {
	t.Helper()
	var l struct {
		Services []picture.Service `json:"services"`
	}
	o.listJSON(t, &l, "service", "ls", "--service", opsSvc)
	if len(l.Services) != 1 {
		t.Fatalf("service ls --service %s: %+v", opsSvc, l.Services)
	}
	return l.Services[0]
}

func (o *opsSystem) hosts(t *testing.T) []picture.Host {
	t.Helper()
	var l struct {
		Hosts []picture.Host `json:"hosts"`
	}
	o.listJSON(t, &l, "host", "ls")
	return l.Hosts
}

func (o *opsSystem) replicas(t *testing.T) []picture.Replica {
	t.Helper()
	var l struct {
		Replicas []picture.Replica `json:"replicas"`
	}
	o.listJSON(t, &l, "replica", "ls")
	return l.Replicas
}

// TestOperations: the admin commands against a real system with real
// replicas: figures change as calls are made, two brokers' counters add
// up, hosts, replicas and conversations are listed with their figures,
// logs come over NATS, and isolating the host stops placements while its
// open conversation finishes.
func TestOperations(t *testing.T) {
	o := startOps(t)
	ctx := testutil.Context(t, 2*time.Minute)

	// A cold call (queued through a broker), then queued calls straight
	// to the brokers (a plain NATS client's way), then warm calls.
	run(t, nil, "call", o.server, opsSvc, "cold")
	const queued = 20
	for i := range queued {
		if _, err := o.nc.Request(proto.CallSubject(proto.MustService(opsSvc)), []byte(fmt.Sprint(i)), 10*time.Second); err != nil {
			t.Fatalf("queued call %d: %v", i, err)
		}
	}
	const warm = 5
	for range warm {
		if _, err := o.c.Call(ctx, opsSvc, []byte("warm")); err != nil {
			t.Fatal(err)
		}
	}
	var s picture.Service
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		s = o.service(t)
		if s.Queued < queued+1 || s.Warm < warm {
			return fmt.Errorf("queued %d, warm %d; want ≥ %d and ≥ %d", s.Queued, s.Warm, queued+1, warm)
		}
		return nil
	})
	// The brokers' own counters add up to the picture's.
	var sum int64
	for _, b := range o.brokers {
		var mine int64
		for _, st := range b.Stats(ctx) {
			if st.Service == opsSvc {
				mine = st.TotalRequests
			}
		}
		if mine == 0 {
			t.Errorf("broker %s queued nothing of %d requests: cannot check that two brokers add up", b.ID(), queued)
		}
		sum += mine
	}
	if s.Queued != sum || s.Requests != s.Queued+s.Warm {
		t.Fatalf("service figures %+v: queued %d, want the brokers' sum %d; requests %d, want queued + warm", s, s.Queued, sum, s.Requests)
	}
	if s.Replicas != 1 || len(s.Hosts) != 1 || s.Hosts[0] != "ops-host" || s.Events < queued+warm+1 {
		t.Fatalf("service figures %+v", s)
	}
	// One more call: the figures follow.
	if _, err := o.c.Call(ctx, opsSvc, []byte("one more")); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if n := o.service(t).Requests; n != s.Requests+1 {
			return fmt.Errorf("requests %d, want %d", n, s.Requests+1)
		}
		return nil
	})

	// A conversation, open while we look.
	conv, _, err := o.c.Open(ctx, opsSvc, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	var rep picture.Replica
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		reps := o.replicas(t)
		if len(reps) != 1 {
			return fmt.Errorf("%d replicas", len(reps))
		}
		rep = reps[0]
		if rep.Attach != "ops-host" || len(rep.Convs) != 1 || rep.RSS == 0 || rep.LastActive == 0 || rep.PID == 0 {
			return fmt.Errorf("replica %+v: want host ops-host, one conversation, RSS and last activity", rep)
		}
		return nil
	})
	const wantClient = "alice"
	if cv := rep.Convs[0]; cv.Call || cv.Client != wantClient || cv.Started == 0 {
		t.Fatalf("conversation %+v, want a conversation of client %q", cv, wantClient)
	}
	var convs struct {
		Convs []struct {
			Replica string `json:"replica"`
			Client  string `json:"client"`
			Host    string `json:"host"`
		} `json:"convs"`
	}
	o.listJSON(t, &convs, "conv", "ls")
	if len(convs.Convs) != 1 || convs.Convs[0].Replica != rep.ID || convs.Convs[0].Client != wantClient || convs.Convs[0].Host != "ops-host" {
		t.Fatalf("conv ls: %+v", convs)
	}
	if out := run(t, nil, "replica", "show", o.server, rep.ID); !strings.Contains(out, "conversation from "+wantClient) || !strings.Contains(out, "/event") {
		t.Fatalf("replica show:\n%s", out)
	}
	var hs []picture.Host
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		hs = o.hosts(t)
		if len(hs) != 1 {
			return fmt.Errorf("hosts %+v", hs)
		}
		h := hs[0]
		if !h.Online || h.Status != "active" || h.Users != 1 || h.MaxUsers != 4 || h.Replicas != 1 || len(h.Procs) != 1 || h.MemTotal == 0 {
			return fmt.Errorf("host %+v: want online, active, 1 of 4 users, 1 replica with its process", h)
		}
		return nil
	})
	if out := run(t, nil, "status", o.server); !strings.Contains(out, "hosts: 1 online of 1 registered") || !strings.Contains(out, "brokers: 2") {
		t.Fatalf("status:\n%s", out)
	}

	// Logs over NATS: the replica's and the host's own.
	if out := run(t, nil, "replica", "logs", o.server, rep.ID); !strings.Contains(out, rep.ID) {
		t.Fatalf("replica logs: %q", out)
	}
	if out := run(t, nil, "host", "logs", o.server, "ops-host"); !strings.Contains(out, "attach manager started") {
		t.Fatalf("host logs: %q", out)
	}

	// Isolation: no new placements; the open conversation finishes.
	if out := run(t, nil, "host", "isolate", o.server, "ops-host"); !strings.Contains(out, "host ops-host isolated") {
		t.Fatalf("isolate: %q", out)
	}
	if hs = o.hosts(t); hs[0].Status != "isolated" || !hs[0].Isolated {
		t.Fatalf("host after isolate: %+v", hs[0])
	}
	if r, err := conv.Send(ctx, []byte("still there?")); err != nil || !strings.Contains(string(r), "still there?") {
		t.Fatalf("the open conversation after isolate: %q, %v", r, err)
	}
	if err := conv.End(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if reps := o.replicas(t); len(reps) != 0 {
			return fmt.Errorf("%d replicas still live on an isolated host", len(reps))
		}
		return nil
	})
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = o.c.Call(cctx, opsSvc, []byte("nowhere"))
	cancel()
	if err == nil {
		t.Fatal("a call was served while the only host is isolated")
	}
	if n := len(o.replicas(t)); n != 0 {
		t.Fatalf("%d replicas placed on an isolated host", n)
	}
	// The isolation is kept across a restart of the manager (state dir).
	if _, err := os.Stat(filepath.Join(o.stateDir, "isolated")); err != nil {
		t.Fatalf("isolation not persisted: %v", err)
	}
	if out := run(t, nil, "host", "restore", o.server, "ops-host"); !strings.Contains(out, "restored") {
		t.Fatalf("restore: %q", out)
	}
	if r, err := o.c.Call(ctx, opsSvc, []byte("back")); err != nil || string(r) != "back" {
		t.Fatalf("call after restore: %q, %v", r, err)
	}
}

// Errors name what was not found; --sort and filters check their input.
func TestOperationsErrors(t *testing.T) {
	o := startOps(t)
	for _, tc := range []struct {
		args []string // the command words, then --server, then the rest
		rest []string
		want string
	}{
		{[]string{"host", "show"}, []string{"nosuch"}, "host nosuch not found"},
		{[]string{"host", "isolate"}, []string{"nosuch"}, "host nosuch not found"},
		{[]string{"host", "logs"}, []string{"nosuch"}, "host nosuch not found"},
		{[]string{"service", "show"}, []string{"NO/SUCH/SVC"}, "service NO/SUCH/SVC not found"},
		{[]string{"replica", "show"}, []string{"nosuch"}, "replica nosuch not found"},
		{[]string{"replica", "logs"}, []string{"nosuch"}, "replica nosuch not found"},
		{[]string{"service", "ls"}, []string{"--sort", "nosuch"}, `--sort "nosuch": no such field`},
		{[]string{"status"}, []string{"extra"}, `unexpected argument "extra"`},
	} {
		r := runApp(context.Background(), nil, append(append(tc.args, o.server), tc.rest...)...)
		if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("muster %s: %v; want an error with %q", strings.Join(tc.args, " "), r.err, tc.want)
		}
		var pe *proto.Error
		if errors.As(r.err, &pe) {
			t.Errorf("muster %s: a coded error %v for bad input", strings.Join(tc.args, " "), pe)
		}
	}
	// --sort orders: two services, the busier first.
	run(t, nil, "call", o.server, opsSvc, "x")
	var l struct {
		Services []picture.Service `json:"services"`
	}
	o.listJSON(t, &l, "service", "ls", "--sort", "requests")
	if len(l.Services) == 0 || l.Services[0].Service != opsSvc {
		t.Fatalf("service ls --sort requests: %+v", l.Services)
	}
}

// The host pool and placement settings, as an operator uses them: hosts
// add themselves, configured hosts show offline too, a service's scheme
// is set and reported, a host's limits change live, a disabled host gets
// no placements (callers told at once, 0021/0048), and errors name what
// was not found.
func TestPool(t *testing.T) {
	o := startOps(t)
	ctx := testutil.Context(t, 2*time.Minute)
	host := func(id string) picture.Host {
		t.Helper()
		for _, h := range o.hosts(t) {
			if h.ID == id {
				return h
			}
		}
		t.Fatalf("host %s not listed", id)
		return picture.Host{}
	}
	if h := host("ops-host"); !h.Configured || h.Disabled {
		t.Fatalf("the attach manager did not add itself to the pool: %+v", h)
	}
	run(t, nil, "host", "add", o.server, "--note", "spare", "ghost")
	if h := host("ghost"); !h.Configured || h.Online || h.Status != "offline" {
		t.Fatalf("configured host without a manager: %+v", h)
	}
	if out := run(t, nil, "host", "ls", o.server); !strings.Contains(out, "2 configured, 1 online") {
		t.Fatalf("host ls:\n%s", out)
	}

	run(t, nil, "service", "placement", o.server, opsSvc, "users")
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if s := o.service(t); s.Placement != "users" {
			return fmt.Errorf("placement %q, want users", s.Placement)
		}
		return nil
	})
	run(t, nil, "call", o.server, opsSvc, "cold")
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		out := run(t, nil, "service", "show", o.server, opsSvc)
		if !strings.Contains(out, "placement: users") || !strings.Contains(out, "users: ops-host") {
			return fmt.Errorf("service show does not say which scheme placed the replica:\n%s", out)
		}
		return nil
	})

	run(t, nil, "host", "set", o.server, "ops-host", "max_users=7", "note=rack 3")
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if h := host("ops-host"); h.MaxUsers != 7 || h.PoolMaxUsers != 7 {
			return fmt.Errorf("max_users %d (pool %d), want 7 applied live", h.MaxUsers, h.PoolMaxUsers)
		}
		return nil
	})

	// Disabled, and no replica running: callers are told at once.
	run(t, nil, "host", "disable", o.server, "ops-host")
	for _, r := range o.replicas(t) {
		run(t, nil, "replica", "stop", o.server, "--now", r.ID)
	}
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n := len(o.replicas(t)); n != 0 {
			return fmt.Errorf("%d replicas", n)
		}
		return nil
	})
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := o.c.Call(cctx, opsSvc, []byte("nowhere"))
	cancel()
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeReplicaLimit || !strings.Contains(pe.Description, "ops-host disabled") {
		t.Fatalf("call with the only host disabled: %v, want 0021/0048 naming it", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("told after %v, want at once (deadline 20s)", d)
	}
	run(t, nil, "host", "enable", o.server, "ops-host")
	testutil.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := o.c.Call(cctx, opsSvc, []byte("back"))
		return err
	})

	run(t, nil, "host", "rm", o.server, "ghost")
	for _, h := range o.hosts(t) {
		if h.ID == "ghost" {
			t.Fatal("ghost still listed after host rm")
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"host", "enable", o.server, "nosuch"}, "host nosuch not found in the pool"},
		{[]string{"host", "add", o.server, "ops-host"}, "already in the pool"},
		{[]string{"host", "set", o.server, "ops-host", "speed=9"}, `unknown setting "speed"`},
		{[]string{"service", "placement", o.server, opsSvc, "fastest"}, `unknown placement scheme "fastest"`},
	} {
		if r := runApp(context.Background(), nil, tc.args...); r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("muster %s: %v, want %q", strings.Join(tc.args, " "), r.err, tc.want)
		}
	}
}

// startHost starts one more attach manager (host id) on the system's
// NATS, offering opsSvc with at most max replicas and capacity 1.
func (o *opsSystem) startHost(t *testing.T, id string, max int) *attach.Manager {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	yaml := fmt.Sprintf("host:\n  name: %s\n  state_dir: %s/state\n  temp_dir: %s/tmp\n  log_dir: %s/logs\n  grace: 2s\n  heartbeat: 300ms\n"+
		"services:\n  - service: %s\n    program: %s\n    args: [example, echo]\n    max: %d\n    capacity: 1\n    idle_timeout: 60s\n",
		id, dir, dir, dir, opsSvc, exe, max)
	path := filepath.Join(dir, "attach.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := attach.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(o.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	m, err := startAttach(testutil.Context(t, 30*time.Second), nc, natsconn.Config{URL: o.url}, nil, cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Shutdown(sctx)
	})
	return m
}

// With three hosts offering a service, round-robin puts three replicas
// started at once on three hosts, and `replica ls` shows where and why.
func TestPlacementAcrossHosts(t *testing.T) {
	o := startOps(t) // host ops-host, max 1 of its own
	o.startHost(t, "ops-b", 3)
	o.startHost(t, "ops-c", 3)
	run(t, nil, "service", "placement", o.server, opsSvc, "round-robin")
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		s := o.service(t)
		if s.Placement != "round-robin" || len(s.Hosts) != 3 {
			return fmt.Errorf("placement %q, hosts %v", s.Placement, s.Hosts)
		}
		return nil
	})
	ctx := testutil.Context(t, time.Minute)
	// Three conversations held open at once: three replicas (capacity 1
	// on ops-b and ops-c, 4 on ops-host; each started for waiting work).
	var convs []*client.Conv
	for i := range 3 {
		cv, _, err := o.c.Open(ctx, opsSvc, []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, cv)
	}
	defer func() {
		for _, cv := range convs {
			_ = cv.End(ctx)
		}
	}()
	var hosts map[string]int
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		hosts = map[string]int{}
		for _, r := range o.replicas(t) {
			hosts[r.Attach]++
			if !strings.Contains(r.Placement, "round-robin") {
				return fmt.Errorf("replica %s placement %q", r.ID, r.Placement)
			}
		}
		if len(hosts) < 2 {
			return fmt.Errorf("replicas on %v", hosts)
		}
		return nil
	})
	t.Logf("replicas per host with round-robin: %v", hosts)
}

// `muster call --verbose` says what a call went through: a cold call was
// queued and taken by a replica, the next one is warm.
func TestCallVerbose(t *testing.T) {
	o := startOps(t)
	r := runApp(context.Background(), nil, "call", o.server, "--verbose", opsSvc, "cold")
	if r.err != nil || r.stdout.String() != "cold\n" {
		t.Fatalf("cold call: %v %q", r.err, r.stdout.String())
	}
	if e := r.stderr.String(); !strings.Contains(e, "queued by a broker after") || !strings.Contains(e, "took it after") || !strings.Contains(e, "reply after") {
		t.Fatalf("cold call --verbose: %q", e)
	}
	r = runApp(context.Background(), nil, "call", o.server, "-v", opsSvc, "warm")
	if e := r.stderr.String(); r.err != nil || !strings.Contains(e, "warm: a running replica took it at once") {
		t.Fatalf("warm call --verbose: %v %q", r.err, e)
	}
}
