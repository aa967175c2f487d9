package streams_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

// The version check refuses servers without per-message TTL, naming the
// minimum and why, and accepts the ones with it. The versions are those of
// real INFO lines (2.10.22 and 2.9.25 are releases without TTL), and the
// running server's own.
func TestCheckServerVersion(t *testing.T) {
	infos := map[string]bool{ // INFO line → accepted
		`{"server_id":"NBQ6MFWTKDM2GLG3YYK2LWG5WGQBGZ2YJXJ5W6CJHVBA7F2SYBY4NW3G","server_name":"n1","version":"2.10.22","proto":1,"git_commit":"240e9a4","go":"go1.22.8","host":"0.0.0.0","port":4222,"headers":true,"max_payload":1048576,"jetstream":true,"client_id":5,"client_ip":"127.0.0.1"}`: false,
		`{"server_id":"NCTYDJ6R4EKDAXXUHGDB3OGN6ZCXZ5JPY5DZ7AMDZLRYL2WDFA7DP6UZ","server_name":"n2","version":"2.9.25","proto":1,"git_commit":"bfe3ab5","go":"go1.20.12","host":"0.0.0.0","port":4222,"headers":true,"max_payload":1048576,"jetstream":true,"client_id":9,"client_ip":"127.0.0.1"}`: false,
		`{"server_id":"NAKWAXZ3Z2Z3H5XJ3Y3ZQOR5OMDMMA7KQ4TGSOQPGO5YKI5H6SFTOW6R","server_name":"n3","version":"2.11.0","proto":1,"git_commit":"7792f45","go":"go1.24.1","host":"0.0.0.0","port":4222,"headers":true,"max_payload":1048576,"jetstream":true,"client_id":3,"client_ip":"127.0.0.1"}`:  true,
	}
	for line, ok := range infos {
		var info struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal([]byte(line), &info); err != nil {
			t.Fatal(err)
		}
		checkVersion(t, info.Version, ok)
	}
	for v, ok := range map[string]bool{
		"2.10.29": false, "2.11.0-RC.1": false, "1.4.1": false, "": false, "2.11": false, "dev": false,
		"2.11.1": true, "2.12.0-preview.2": true, "2.15.2+build.7": true, "3.0.0": true,
	} {
		checkVersion(t, v, ok)
	}
	nc := testutil.Connect(t, testutil.StartNATS(t))
	checkVersion(t, nc.ConnectedServerVersion(), true)
}

func checkVersion(t *testing.T, v string, ok bool) {
	t.Helper()
	err := streams.CheckServerVersion(v)
	switch {
	case ok && err != nil:
		t.Errorf("version %q refused: %v", v, err)
	case !ok && err == nil:
		t.Errorf("version %q accepted, want refused", v)
	case !ok:
		for _, want := range []string{v, streams.MinServerVersion, "2.11.0", "per-message TTL", "allow_msg_ttl", "deadline"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("version %q: %q does not say %q", v, err, want)
			}
		}
	}
}

// queueWithoutTTL creates the queue stream as an older Muster (or a
// server before 2.11) left it: without allow_msg_ttl.
func queueWithoutTTL(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: proto.QueueStream, Subjects: []string{proto.QueuePrefix + ">"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
}

// An existing queue stream without allow_msg_ttl is updated at start, and
// queued requests then expire by their Nats-TTL.
func TestEnsureQueueEnablesMsgTTL(t *testing.T) {
	nc := testutil.Connect(t, testutil.StartNATS(t))
	js, _ := jetstream.New(nc)
	ctx := testutil.Context(t, 10*time.Second)
	queueWithoutTTL(t, js)
	s, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowMsgTTL {
		t.Fatal("queue stream still without allow_msg_ttl")
	}
	m := nats.NewMsg(proto.QueueSubject(proto.MustService("T/TTL/X")))
	m.Header.Set("Nats-TTL", "1s")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("queueing with a TTL: %v", err)
	}
}

// When the stream cannot be updated (here the user may not), the start
// fails saying what is wrong and what to change.
func TestEnsureQueueWithoutTTLCannotUpdate(t *testing.T) {
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "admin", Password: "a"},
			{Username: "app", Password: "b", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.UPDATE.>"}},
			}},
		},
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	admin, err := nats.Connect(s.ClientURL(), nats.UserInfo("admin", "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ajs, _ := jetstream.New(admin)
	queueWithoutTTL(t, ajs)
	app, err := nats.Connect(s.ClientURL(), nats.UserInfo("app", "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	js, _ := jetstream.New(app)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = streams.EnsureQueue(ctx, js)
	if err == nil {
		t.Fatal("started on a queue stream without allow_msg_ttl")
	}
	for _, want := range []string{"does not allow per-message TTL", "nats stream edit MUSTER_QUEUE --allow-msg-ttl", "deadline"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// On a single server the assets have one copy, automatically; asking for
// more is refused with a message saying what to change.
func TestAssetsSingleServer(t *testing.T) {
	nc := testutil.Connect(t, testutil.StartNATS(t))
	js, _ := jetstream.New(nc)
	ctx := testutil.Context(t, 10*time.Second)
	s, err := streams.Config{}.EnsureQueue(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 1 {
		t.Fatalf("queue has %d copies on a single server", r)
	}
	_, err = streams.Config{Replicas: 3}.EnsureQueue(ctx, js)
	if err == nil || !strings.Contains(err.Error(), streams.EnvReplicas) || !strings.Contains(err.Error(), "has 1 copies") {
		t.Fatalf("3 copies on a single server: %v, want a refusal naming %s", err, streams.EnvReplicas)
	}
	if _, err := streams.ConfigFromEnv(func(string) (string, bool) { return "seven", true }); err == nil ||
		!strings.Contains(err.Error(), streams.EnvReplicas) {
		t.Fatalf("bad %s: %v", streams.EnvReplicas, err)
	}
	if c, err := streams.ConfigFromEnv(func(string) (string, bool) { return "2", true }); err != nil || c.Replicas != 2 {
		t.Fatalf("%s=2: %+v %v", streams.EnvReplicas, c, err)
	}
}

// assets ensures the queue (with one service's consumer) and both buckets
// the way brokers and attach managers do, with c.
func assets(t *testing.T, c streams.Config, js jetstream.JetStream, svc proto.Service) (jetstream.Stream, jetstream.Consumer, []jetstream.KeyValue) {
	t.Helper()
	ctx := testutil.Context(t, 30*time.Second)
	s, err := c.EnsureQueue(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := streams.QueueConsumer(ctx, s, svc)
	if err != nil {
		t.Fatal(err)
	}
	var kvs []jetstream.KeyValue
	for _, b := range []string{proto.ReplicaBucket, proto.AttachBucket} {
		kv, err := c.EnsureBucket(ctx, js, b)
		if err != nil {
			t.Fatal(err)
		}
		kvs = append(kvs, kv)
	}
	return s, cons, kvs
}

// copies reports how many copies of each asset the cluster keeps.
func copies(ctx context.Context, js jetstream.JetStream, svc proto.Service) (map[string]int, error) {
	out := map[string]int{}
	for _, name := range []string{proto.QueueStream, "KV_" + proto.ReplicaBucket, "KV_" + proto.AttachBucket} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		info := s.CachedInfo()
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return nil, fmt.Errorf("%s has no leader", name)
		}
		out[name] = 1 + len(info.Cluster.Replicas)
	}
	c, err := js.Consumer(ctx, proto.QueueStream, proto.ConsumerName(svc))
	if err != nil {
		return nil, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil, fmt.Errorf("consumer has no leader")
	}
	out["consumer"] = 1 + len(info.Cluster.Replicas)
	return out, nil
}

func wantCopies(t *testing.T, js jetstream.JetStream, svc proto.Service, n int) {
	t.Helper()
	ctx := testutil.Context(t, 20*time.Second)
	testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		got, err := copies(ctx, js, svc)
		if err != nil {
			return err
		}
		for _, v := range got {
			if v != n {
				return fmt.Errorf("copies %v, want %d of each", got, n)
			}
		}
		return nil
	})
}

func clusterJS(t *testing.T, c *testutil.Cluster) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return js
}

// On a three-node cluster every asset gets three copies: new ones at
// creation, and assets left with one copy (an older Muster) at the next
// start, the queue consumer following its stream.
func TestAssetsReplicatedOnCluster(t *testing.T) {
	c := testutil.StartCluster(t, 3)
	js := clusterJS(t, c)
	svc := proto.MustService("T/REPL/ICA")
	assets(t, streams.Config{Replicas: 1}, js, svc)
	wantCopies(t, js, svc, 1)
	assets(t, streams.Config{}, js, svc)
	wantCopies(t, js, svc, 3)
	assets(t, streams.Config{Replicas: 2}, js, svc) // the override, both ways
	wantCopies(t, js, svc, 2)
	assets(t, streams.Config{}, js, svc)
	wantCopies(t, js, svc, 3)
}

// The node that leads the buckets is lost: the buckets serve again within
// a few seconds. The node that leads the queue is lost: no queued request
// is lost.
func TestAssetsSurviveNodeLoss(t *testing.T) {
	c := testutil.StartCluster(t, 3)
	js := clusterJS(t, c)
	svc := proto.MustService("T/NODE/LOSS")
	ctx := testutil.Context(t, 60*time.Second)
	s, cons, kvs := assets(t, streams.Config{}, js, svc)
	wantCopies(t, js, svc, 3)

	kv := kvs[0]
	if _, err := kv.Put(ctx, "r1", []byte("before")); err != nil {
		t.Fatal(err)
	}
	kvStream, err := js.Stream(ctx, "KV_"+proto.ReplicaBucket)
	if err != nil {
		t.Fatal(err)
	}
	lost := c.Index(kvStream.CachedInfo().Cluster.Leader)
	c.Stop(lost)
	stopped := time.Now()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		octx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if _, err := kv.Put(octx, "r2", []byte("after")); err != nil {
			return err
		}
		e, err := kv.Get(octx, "r1")
		if err != nil {
			return err
		}
		if string(e.Value()) != "before" {
			return fmt.Errorf("r1 = %q", e.Value())
		}
		return nil
	})
	t.Logf("KV serving again %v after its leader's node was stopped", time.Since(stopped).Round(time.Millisecond))
	c.Restart(lost)
	c.WaitReady(3)

	const n = 200
	for i := range n {
		if _, err := js.Publish(ctx, proto.QueueSubject(svc), fmt.Appendf(nil, "req-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost = c.Index(info.Cluster.Leader)
	c.Stop(lost)
	stopped = time.Now()
	seen := map[string]bool{}
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			seen[string(m.Data())] = true
			_ = m.Ack()
		}
		if len(seen) < n {
			return fmt.Errorf("%d of %d queued requests pulled (%v)", len(seen), n, batch.Error())
		}
		return nil
	})
	t.Logf("all %d queued requests pulled %v after the queue leader's node was stopped", n, time.Since(stopped).Round(time.Millisecond))
	for i := range n {
		if !seen[fmt.Sprintf("req-%d", i)] {
			t.Errorf("queued request %d lost", i)
		}
	}
}

// On a two-node cluster, automatic means two copies.
func TestAssetsTwoNodeCluster(t *testing.T) {
	c := testutil.StartCluster(t, 2)
	js := clusterJS(t, c)
	svc := proto.MustService("T/TWO/NODES")
	assets(t, streams.Config{}, js, svc)
	wantCopies(t, js, svc, 2)
}

// A replica (FindOnly) finds the assets with one look-up each and creates
// only the missing ones: on an empty server its queue consumer (and with
// it the queue stream) and its bucket are made; a consumer that exists
// is found as it is, never updated (the brokers do that).
func TestFindOnly(t *testing.T) {
	nc := testutil.Connect(t, testutil.StartNATS(t))
	js, _ := jetstream.New(nc)
	ctx := testutil.Context(t, 10*time.Second)
	svc := proto.MustService("T/FIND/ONLY")
	find := streams.Config{FindOnly: true}
	if err := find.EnsureQueueConsumer(ctx, js, svc); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Consumer(ctx, proto.QueueStream, proto.ConsumerName(svc)); err != nil {
		t.Fatalf("consumer not made: %v", err)
	}
	if _, err := js.Stream(ctx, proto.QueueStream); err != nil {
		t.Fatalf("queue stream not made: %v", err)
	}
	if _, err := find.EnsureBucket(ctx, js, proto.ReplicaBucket); err != nil {
		t.Fatal(err)
	}
	if _, err := js.KeyValue(ctx, proto.ReplicaBucket); err != nil {
		t.Fatalf("bucket not made: %v", err)
	}

	old := jetstream.ConsumerConfig{Durable: proto.ConsumerName(svc), Description: "an older Muster",
		FilterSubject: proto.QueueSubject(svc), AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxWaiting: 4096}
	if _, err := js.CreateOrUpdateConsumer(ctx, proto.QueueStream, old); err != nil {
		t.Fatal(err)
	}
	if err := find.EnsureQueueConsumer(ctx, js, svc); err != nil {
		t.Fatal(err)
	}
	if cons, err := js.Consumer(ctx, proto.QueueStream, proto.ConsumerName(svc)); err != nil || cons.CachedInfo().Config.Description != old.Description {
		t.Fatalf("FindOnly changed an existing consumer (or failed: %v)", err)
	}
	s, err := js.Stream(ctx, proto.QueueStream)
	if err != nil {
		t.Fatal(err)
	}
	if cons, err := streams.QueueConsumer(ctx, s, svc); err != nil || cons.CachedInfo().Config.AckWait != streams.AckWait {
		t.Fatalf("QueueConsumer did not bring the consumer up to date (%v)", err)
	}
}
