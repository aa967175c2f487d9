package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/nats-io/nats.go/jetstream"
)

// The targets every scenario must meet (issue: "Keep serving through
// faults"); the time targets are reported, and checked with a margin for
// a loaded two-core machine.
func checkCommon(t *testing.T, s *system, tal *tally) {
	t.Helper()
	if tal.ok == 0 {
		t.Errorf("no call succeeded: %v", tal)
	}
	if tal.hung > 0 {
		t.Errorf("%d calls hung (no reply or error by their deadline + %v): %v", tal.hung, hangMargin, tal)
	}
	if tal.wrong > 0 {
		t.Errorf("%d wrong replies: %v", tal.wrong, tal)
	}
	if tal.other > 0 {
		t.Errorf("%d calls ended in an error without a code: %v", tal.other, tal)
	}
	// Every scenario gives its calls a deadline far beyond their work: a
	// call that waits to it was lost silently (its replica died, or its
	// queued request went with a node) instead of being told.
	execs := s.executions()
	if n := tal.codes["0074/0074"]; n > 0 {
		t.Errorf("%d calls waited to their deadline (0074/0074): lost without a word", n)
		for _, o := range tal.outs {
			if o.code == "0074/0074" {
				t.Logf("%s", describe(o, execs[o.id]))
			}
		}
	}
	if d := duplicates(execs); len(d) > 0 {
		t.Errorf("%d requests executed more than once: %v", len(d), d[:min(len(d), 5)])
	}
}

// describe tells how far a call got, from its trace: for a call that
// ended wrongly, whether its request was lost, queued and lost, or taken
// and its reply lost. executed is how often a replica ran it.
func describe(o outcome, executed int) string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.Sub(o.start).Round(time.Millisecond).String()
	}
	tr := o.trace
	return fmt.Sprintf("call %s (started %s): sent %s, queued %s (seq %q), working %s (replica %q), reply %s, ended %s; executed %d times",
		o.id, o.start.Format("15:04:05.000"), at(tr.Sent), at(tr.Queued), tr.Seq, at(tr.Working), tr.Replica, at(tr.Reply), o.end.Sub(o.start).Round(time.Millisecond), executed)
}

// alive reports whether process pid runs: it exists and is not a zombie
// (a replica orphaned by a SIGKILLed manager is reaped by whoever is PID 1,
// which in a container may never do it).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := bytes.Fields(st[bytes.LastIndexByte(st, ')')+1:])
	return len(f) == 0 || string(f[0]) != "Z"
}

// waitOutcomes waits until the load has recorded n more outcomes.
func (l *load) waitOutcomes(t *testing.T, n int, within time.Duration) {
	t.Helper()
	l.mu.Lock()
	want := len(l.outs) + n
	l.mu.Unlock()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		got := len(l.outs)
		l.mu.Unlock()
		if got >= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("load did not record %d outcomes within %v", n, within)
}

// TestChaosReplicaKills SIGKILLs a random replica every 100 ms under load.
// Callers of a killed replica get a coded error promptly; nobody waits to
// the deadline, nothing hangs, nothing runs twice; calls succeed again
// once the kills stop.
func TestChaosReplicaKills(t *testing.T) {
	s := newSystem(t, 4)
	s.start("broker")
	s.start("attach")
	c := s.client()
	s.waitReady(c, 20*time.Second)

	l := startLoad(c, "rk", 4, 20*time.Millisecond, 15*time.Second)
	kills := 0
	end := time.Now().Add(scale(3*time.Second, 30*time.Second))
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		if pids := s.replicaPIDs(); len(pids) > 0 {
			if syscall.Kill(pids[rand.IntN(len(pids))], syscall.SIGKILL) == nil {
				kills++
			}
		}
	}
	stopped := time.Now()
	// Replicas killed before they registered count as failed starts: the
	// service may be failing (0900/0004) until the manager's next probe
	// registers (every 5 s). Wait for the load to succeed again.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		l.waitOutcomes(t, 10, 20*time.Second)
		if l.lastOK(10) {
			break
		}
	}
	tal := l.finish(t)
	checkCommon(t, s, tal)
	slowest := time.Duration(0)
	for _, o := range tal.outs {
		if !o.ok && o.code != proto.CodeServiceFailing.String() {
			slowest = max(slowest, o.end.Sub(o.start))
		}
	}
	rec := tal.recoveredAfter(stopped)
	t.Logf("replica kills: %d SIGKILLs in %v; %v; slowest failed call (other than 0900/0004) %v; calls succeed again %v after the kills stopped",
		kills, scale(3*time.Second, 30*time.Second), tal, slowest.Round(time.Millisecond), rec.Round(time.Millisecond))
	if rec < 0 {
		t.Errorf("calls did not succeed again within 20 s after the kills stopped")
	}
	if slowest > 10*time.Second {
		t.Errorf("a caller took %v to learn its replica died (target about 1 s)", slowest)
	}
}

// lastOK reports whether the last n calls succeeded.
func (l *load) lastOK(n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.outs) < n {
		return false
	}
	for _, o := range l.outs[len(l.outs)-n:] {
		if !o.ok {
			return false
		}
	}
	return true
}

// TestChaosAttachManagerKill SIGKILLs the attach manager while its
// replicas are busy and starts a new one on the same state: the new one
// serves at once and stops the old replicas within their grace.
func TestChaosAttachManagerKill(t *testing.T) {
	s := newSystem(t, 4)
	s.start("broker")
	m1 := s.start("attach")
	c := s.client()
	nc := s.connect()
	s.waitReady(c, 20*time.Second)

	l := startLoad(c, "mk", 4, 300*time.Millisecond, 10*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for len(s.replicaPIDs()) < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	old := s.replicaPIDs()
	if len(old) == 0 {
		t.Fatal("no replicas before the kill")
	}
	killed := time.Now()
	m1.kill()
	s.start("attach")

	var registered, orphansGone time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil && (registered == 0 || orphansGone == 0) {
		if registered == 0 {
			if ai, ok := s.attachRecords(ctx, nc)["chaos"]; ok && ai.Started >= killed.UnixMilli() {
				registered = time.Since(killed)
			}
		}
		if orphansGone == 0 && !slices.ContainsFunc(old, alive) {
			orphansGone = time.Since(killed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.waitOutcomes(t, 20, 20*time.Second)
	tal := l.finish(t)
	checkCommon(t, s, tal)
	t.Logf("attach manager SIGKILL with %d busy replicas: new manager registered after %v, old replicas gone after %v (grace 2s); %v",
		len(old), registered.Round(time.Millisecond), orphansGone.Round(time.Millisecond), tal)
	if registered == 0 || registered > 5*time.Second {
		t.Errorf("new manager registered after %v (target 1 s)", registered)
	}
	if orphansGone == 0 || orphansGone > 5*time.Second {
		t.Errorf("old replicas gone after %v (target: within their 2 s grace)", orphansGone)
	}
}

// TestChaosBrokerKill SIGKILLs the broker while requests wait in the
// queue and starts another: no queued request is lost.
func TestChaosBrokerKill(t *testing.T) {
	s := newSystem(t, 1) // one replica, so calls queue
	b1 := s.start("broker")
	s.start("attach")
	c := s.client()
	s.waitReady(c, 20*time.Second)

	l := startLoad(c, "bk", 6, 100*time.Millisecond, 20*time.Second)
	l.waitOutcomes(t, 10, 20*time.Second)
	killed := time.Now()
	b1.kill()
	s.start("broker")
	l.waitOutcomes(t, 30, 30*time.Second)
	tal := l.finish(t)
	checkCommon(t, s, tal)
	t.Logf("broker SIGKILL with queued work: %v; calls succeed again %v after the kill", tal, tal.recoveredAfter(killed).Round(time.Millisecond))
}

// TestChaosLeaderKill SIGKILLs the leading broker of two while requests
// wait in the queue: the other takes the lead (by its lease) and notifies,
// and no queued request is lost.
func TestChaosLeaderKill(t *testing.T) {
	s := newSystem(t, 1) // one replica, so calls queue
	b1 := s.start("broker")
	nc := s.connect()
	ctx := testutil.Context(t, time.Minute)
	leader := func() string {
		js, err := jetstream.New(nc)
		if err != nil {
			return ""
		}
		kv, err := js.KeyValue(ctx, proto.LeaseBucket)
		if err != nil {
			return ""
		}
		e, err := kv.Get(ctx, "lead")
		if err != nil {
			return ""
		}
		var rec struct{ Broker string }
		_ = json.Unmarshal(e.Value(), &rec)
		return rec.Broker
	}
	var first string
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if first = leader(); first == "" {
			return errors.New("no leader yet")
		}
		return nil
	})
	s.start("broker") // a follower
	s.start("attach")
	c := s.client()
	s.waitReady(c, 20*time.Second)

	l := startLoad(c, "lk", 6, 100*time.Millisecond, 20*time.Second)
	l.waitOutcomes(t, 10, 20*time.Second)
	killed := time.Now()
	b1.kill() // the first broker took the lease: it leads
	var took time.Duration
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if l := leader(); l == "" || l == first {
			return fmt.Errorf("leader %q", l)
		}
		took = time.Since(killed)
		return nil
	})
	l.waitOutcomes(t, 30, 30*time.Second)
	tal := l.finish(t)
	checkCommon(t, s, tal)
	t.Logf("leading broker SIGKILL with queued work: %v; another broker led %v after the kill; calls succeed again %v after", tal,
		took.Round(time.Millisecond), tal.recoveredAfter(killed).Round(time.Millisecond))
}

// TestChaosNATSRestart shuts the NATS server down under load and starts
// it again on the same port and store: calls succeed again within 2 s of
// the server being back, no caller is told 0007/0007, no healthy replica
// is killed.
func TestChaosNATSRestart(t *testing.T) {
	s := newSystem(t, 4)
	s.start("broker")
	s.start("attach")
	c := s.client()
	s.waitReady(c, 20*time.Second)

	nc := s.connect()
	l := startLoad(c, "nr", 4, 10*time.Millisecond, 15*time.Second)
	l.waitOutcomes(t, 50, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	before := s.registeredPIDs(ctx, nc) // healthy: registered (a replica still starting may fail its start)
	cancel()
	s.stopNATS()
	time.Sleep(scale(time.Second, 3*time.Second)) // the outage itself
	s.startNATS(s.port)
	back := time.Now()
	deadline := time.Now().Add(scale(5*time.Second, 20*time.Second))
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	tal := l.finish(t)
	checkCommon(t, s, tal)
	rec := tal.recoveredAfter(back)
	var killed []int
	for _, pid := range before {
		if !alive(pid) {
			killed = append(killed, pid)
		}
	}
	t.Logf("NATS restart (down %v): calls succeed again %v after the server is back; %d of %d replicas killed; %v",
		scale(time.Second, 3*time.Second), rec.Round(time.Millisecond), len(killed), len(before), tal)
	if n := tal.codes["0007/0007"]; n > 0 {
		t.Errorf("%d false 0007/0007 answers", n)
	}
	if len(killed) > 0 {
		t.Errorf("healthy replicas killed: %v", killed)
	}
	if rec < 0 || rec > 5*time.Second {
		t.Errorf("calls succeed again %v after the server is back (target 2 s)", rec)
	}
}

// TestChaosNodeLoss stops the node of a three-node cluster that leads
// the queue stream while requests wait in it: no queued request is lost
// and queued calls are served again within 2 s.
func TestChaosNodeLoss(t *testing.T) {
	s := newSystemOn(t, 2, 3) // two replicas, so calls queue
	s.start("broker")
	s.start("attach")
	c := s.client()
	nc := s.connect()
	s.waitReady(c, 30*time.Second)

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, proto.QueueStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil {
		t.Fatalf("queue stream info: %v %+v", err, info)
	}
	victim := s.cluster.Index(info.Cluster.Leader)
	if victim < 0 {
		t.Fatalf("queue stream leader %q is not a node of the cluster", info.Cluster.Leader)
	}

	l := startLoad(c, "nl", 6, 100*time.Millisecond, 15*time.Second)
	l.waitOutcomes(t, 20, 20*time.Second)
	lost := time.Now()
	s.cluster.Stop(victim)
	l.waitOutcomes(t, 60, 40*time.Second)
	// A call held by a replica whose connection was on the lost node may
	// end 0003/0012 late in the run: go on until the last calls succeed.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !l.lastOK(10); {
		l.waitOutcomes(t, 10, 20*time.Second)
	}
	tal := l.finish(t)
	checkCommon(t, s, tal)
	rec := tal.recoveredAfter(lost)
	t.Logf("node loss (%s, leader of %s, replicas %d): calls succeed again %v after; %v",
		info.Cluster.Leader, proto.QueueStream, info.Config.Replicas, rec.Round(time.Millisecond), tal)
	if info.Config.Replicas < 3 {
		t.Errorf("%s has %d replicas on a 3-node cluster, want 3", proto.QueueStream, info.Config.Replicas)
	}
	if rec < 0 || rec > 5*time.Second {
		t.Errorf("calls succeed again %v after the node loss (target 2 s)", rec)
	}
}
