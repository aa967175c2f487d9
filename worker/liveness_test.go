package worker_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// A replica process SIGKILLed 50 ms into a warm call, long before its
// "working" status (200–300 ms), does not leave its caller waiting to its
// deadline: the caller asks the service's replicas who holds its request
// (FIND), nobody does, and it gets 0003/0012 within about a second.
func TestReplicaKilledBeforeWorking(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/KILL/EARLY"
	cmd := startHelper(t, e, svc, "ke1")
	// See the request on the wire (a plain subscriber gets a copy of what
	// the replica's queue subscription gets), so the kill comes 50 ms after
	// the replica took it.
	tap, err := e.NC.SubscribeSync(proto.WarmSubject(proto.MustService(svc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	start := time.Now()
	go func() { _, err := e.Client.Call(testutil.Context(t, 30*time.Second), svc, []byte("hang")); errc <- err }()
	if _, err := tap.NextMsg(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(start.Add(50 * time.Millisecond))) // the scenario: 50 ms into the call
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		d := time.Since(killed)
		t.Logf("caller got %v %v after the SIGKILL", err, d)
		if !errors.Is(err, proto.ErrLoggedOff) {
			t.Fatalf("caller got %v, want 0003/0012", err)
		}
		if d > 1500*time.Millisecond {
			t.Fatalf("caller learned of the death after %v, want ≤ 1.5s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("caller still waiting 10s after its replica was killed")
	}
}

// A malformed Muster-Keepalive on NEW is refused (0900/0001); on a CALL,
// which has no conversation to keep alive, it is ignored.
func TestBadKeepalive(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	startHelper(t, e, "T/KA/X", "bk1")
	for _, tc := range []struct {
		op, value string
		want      *proto.Error
	}{
		{proto.OpNew, "soon", proto.ErrBadRequest},
		{proto.OpNew, "10ms", proto.ErrBadRequest},
		{proto.OpCall, "soon", nil},
	} {
		m := nats.NewMsg(proto.WarmSubject(proto.MustService("T/KA/X")))
		m.Header.Set(proto.HdrOp, tc.op)
		m.Header.Set(proto.HdrKeepalive, tc.value)
		m.Data = []byte("x")
		r, err := e.NC.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := proto.ErrorFromHeader(r.Header)
		if tc.want == nil && got != nil || tc.want != nil && !errors.Is(got, tc.want) {
			t.Fatalf("%s with %s %q: %v, want %v", tc.op, proto.HdrKeepalive, tc.value, got, tc.want)
		}
	}
}
