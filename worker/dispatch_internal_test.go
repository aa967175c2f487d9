package worker

import (
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// Fast calls leave the stall timer disarmed: an idle replica has nothing
// to wake for (an earlier watch ticked every millisecond after each call).
func TestStallTimerDisarmedAfterCalls(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/STALL/IDLE")
	r := echoReplica(t, testutil.Connect(t, s), svc)
	nc := testutil.Connect(t, s)
	for i := 0; i < 50; i++ {
		if _, err := nc.Request(proto.WarmSubject(svc), []byte("x"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The dispatcher stops the timer as it leaves the handler, which may
	// be just after the reply reached us.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if r.inlineSince.Load() != 0 {
			return errDispatcherBusy
		}
		return nil
	})
	if r.stall.Stop() {
		t.Fatal("the stall timer is still armed after the calls ended")
	}
}

var errDispatcherBusy = proto.Errorf(proto.CodeServiceError, "dispatcher still in a handler")

// The progress tick stops while the replica has nothing for it, so an
// idle replica wakes only for its heartbeat; a call starts it again.
func TestProgressTickParksWhenIdle(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/TICK/IDLE")
	r := echoReplica(t, testutil.Connect(t, s), svc)
	nc := testutil.Connect(t, s)
	parked := func() error {
		if !r.tickParked.Load() {
			return errTickRunning
		}
		return nil
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, parked)
	r.mu.Lock()
	r.kickTickLocked() // what accept does
	r.mu.Unlock()
	if r.tickParked.Load() {
		t.Fatal("a kick left the tick parked")
	}
	if _, err := nc.Request(proto.WarmSubject(svc), []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, parked) // parks again once the record is written
	// A refused pull is retried by the tick, which parks again once the
	// retry went out.
	r.mu.Lock()
	r.retryPullLocked()
	r.mu.Unlock()
	if r.tickParked.Load() {
		t.Fatal("a pull retry left the tick parked")
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, parked)
}

var errTickRunning = proto.Errorf(proto.CodeServiceError, "progress tick still running")
