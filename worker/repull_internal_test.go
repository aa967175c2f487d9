package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

// testReplica makes (does not start) a replica of svc on nc serving h:
// heartbeat 5s (the re-pulls must not wait for it), no idle timeout, no
// signals, no grace; opts add to these.
func testReplica(t *testing.T, nc *nats.Conn, svc proto.Service, h HandlerFunc, opts ...Option) *replica {
	t.Helper()
	all := append([]Option{WithConn(nc), WithService(svc.String()), WithHeartbeat(5 * time.Second),
		WithIdleTimeout(0), WithSignals(false), WithLogger(quiet), WithGrace(0)}, opts...)
	cfg, err := resolve(noEnv, all)
	if err != nil {
		t.Fatal(err)
	}
	return newReplica(cfg, h, nc)
}

// startTestReplica starts r; the test's end shuts it down.
func startTestReplica(t *testing.T, r *replica) {
	t.Helper()
	if err := r.start(testutil.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.shutdown(0) })
}

// waitPullOpen waits until r's pull request waits at its consumer.
func waitPullOpen(t *testing.T, r *replica) {
	t.Helper()
	ctx := testutil.Context(t, 15*time.Second)
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		c, err := r.js.Consumer(ctx, proto.QueueStream, proto.ConsumerName(r.cfg.service))
		if err != nil {
			return err
		}
		if i, err := c.Info(ctx); err != nil || i.NumWaiting != 1 {
			return fmt.Errorf("replica's pull request not waiting yet (%v)", err)
		}
		return nil
	})
}

// echoReplica starts an echo replica of svc on nc and returns it once its
// pull waits at the consumer.
func echoReplica(t *testing.T, nc *nats.Conn, svc proto.Service) *replica {
	t.Helper()
	r := testReplica(t, nc, svc, func(ctx context.Context, c *Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(m.Data)
	})
	startTestReplica(t, r)
	waitPullOpen(t, r)
	return r
}

// queuedCall queues a request for svc as a broker does, as soon as
// JetStream takes it, and returns how long after start its reply came and
// how long after JetStream took it (a cluster's own failover, which the
// replica cannot speed up, is in the first, not in the second).
func queuedCall(t *testing.T, nc *nats.Conn, svc proto.Service, start time.Time) (total, afterQueued time.Duration) {
	t.Helper()
	ctx := testutil.Context(t, 30*time.Second)
	js, _ := jetstream.New(nc)
	caller, err := nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = caller.Unsubscribe() }()
	q := nats.NewMsg(proto.QueueSubject(svc))
	q.Header.Set(proto.HdrReply, caller.Subject)
	q.Data = []byte("queued")
	testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := js.PublishMsg(pctx, q)
		return err
	})
	queued := time.Now()
	reply, err := caller.NextMsg(20 * time.Second)
	if err != nil || string(reply.Data) != "queued" {
		t.Fatalf("queued request: %v %v", reply, err)
	}
	return time.Since(start), time.Since(queued)
}

// A NATS restart (same port, same store) under a replica: the replica's
// open pull died with the server, and it pulls again as soon as it has
// reconnected, not after the lost-pull timeout.
func TestReplicaPullsAgainAfterNATSRestart(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/NATS/RESTART")
	ctx := testutil.Context(t, 10*time.Second)
	js, _ := jetstream.New(testutil.Connect(t, s))
	stream, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.QueueConsumer(ctx, stream, svc); err != nil {
		t.Fatal(err)
	}
	echoReplica(t, testutil.Connect(t, s, testutil.Reconnecting...), svc)
	caller := testutil.Connect(t, s, testutil.Reconnecting...)
	s = testutil.RestartNATS(t, s, nil)
	back := time.Now()
	d, _ := queuedCall(t, caller, svc, back)
	t.Logf("queued call served %v after the server was back", d.Round(time.Millisecond))
	if d > 2*time.Second {
		t.Fatalf("queued call served %v after the server was back, want within 2s", d)
	}
}

// The node leading the queue consumer of a 3-node cluster is stopped: a
// replica pulls again at once, whether it was connected to that node (it
// reconnects) or to another one (the server says the pull ended, or it
// goes silent), and a queued call is served within 2s.
func TestReplicaPullsAgainAfterLeaderLoss(t *testing.T) {
	for _, onLeader := range []bool{true, false} {
		t.Run(fmt.Sprintf("connected to the leader's node %v", onLeader), func(t *testing.T) {
			c := testutil.StartCluster(t, 3)
			svc := proto.MustService("T/LEADER/LOSS")
			admin, err := nats.Connect(c.URL(), testutil.Reconnecting...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(admin.Close)
			ctx := testutil.Context(t, 60*time.Second)
			js, _ := jetstream.New(admin)
			stream, err := streams.Config{}.EnsureQueue(ctx, js)
			if err != nil {
				t.Fatal(err)
			}
			cons, err := streams.QueueConsumer(ctx, stream, svc)
			if err != nil {
				t.Fatal(err)
			}
			var leader int
			// A fresh cluster under load can take a while to place the
			// consumer's copies: that is setup, not what is measured.
			testutil.CheckFor(t, 40*time.Second, 10*time.Millisecond, func() error {
				info, err := cons.Info(ctx)
				if err != nil {
					return err
				}
				if info.Cluster == nil || len(info.Cluster.Replicas) != 2 || info.Cluster.Leader == "" {
					return fmt.Errorf("consumer not replicated 3 times yet: %+v", info.Cluster)
				}
				leader = c.Index(info.Cluster.Leader)
				return nil
			})
			node := (leader + 1) % 3
			if onLeader {
				node = leader
			}
			url := "nats://" + c.Server(node).Addr().String() + "," + c.URL() // its node first
			rnc, err := nats.Connect(url, append(testutil.Reconnecting, nats.DontRandomize())...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(rnc.Close)
			echoReplica(t, rnc, svc)
			// The caller is on the third node, which stays.
			caller, err := nats.Connect("nats://"+c.Server((leader+2)%3).Addr().String(), testutil.Reconnecting...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(caller.Close)
			c.Stop(leader)
			d, after := queuedCall(t, caller, svc, time.Now())
			t.Logf("queued call served %v after the consumer leader's node was stopped, %v after JetStream took it",
				d.Round(time.Millisecond), after.Round(time.Millisecond))
			// The cluster's failover (the queue stream's new leader taking
			// the request) is the server's; the replica's part is to pull
			// again at once, so the request does not wait for it.
			if after > 2*time.Second {
				t.Fatalf("queued call served %v after JetStream took it (%v after the node stopped), want within 2s", after, d)
			}
		})
	}
}

// JetStream's advisory that the queue consumer has a new leader makes the
// replica pull again at once: a leader that died without a word took the
// open pull with it (the silence would be noticed only after pullLost).
func TestReplicaPullsAgainOnLeaderElectedAdvisory(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/LEADER/ADVISORY")
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 20*time.Second)
	js, _ := jetstream.New(nc)
	stream, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := streams.QueueConsumer(ctx, stream, svc)
	if err != nil {
		t.Fatal(err)
	}
	name := cons.CachedInfo().Name
	pulls, err := nc.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT." + proto.QueueStream + "." + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	echoReplica(t, testutil.Connect(t, s), svc)
	if _, err := pulls.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no first pull: %v", err)
	}
	if err := nc.Publish(leaderElectedPrefix+proto.QueueStream+"."+name, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := pulls.NextMsg(pullLost / 2); err != nil {
		t.Fatalf("no new pull after the leader-elected advisory: %v", err)
	}
}
