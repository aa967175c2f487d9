package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// The stall watch ticks only while calls are served: it parks again
// after stallIdle without one, and a call wakes it.
func TestStallWatchParksWhenIdle(t *testing.T) {
	s := testutil.StartNATS(t)
	svc := proto.MustService("T/STALL/PARK")
	r := echoReplica(t, testutil.Connect(t, s), svc)
	nc := testutil.Connect(t, s)
	parked := func(want bool) {
		t.Helper()
		testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
			if r.watchParked.Load() != want {
				return errors.New("stall watch not in the expected state yet")
			}
			return nil
		})
	}
	parked(true)
	woke := make(chan struct{})
	go func() {
		defer close(woke)
		for r.watchParked.Load() {
			if _, err := nc.Request(proto.WarmSubject(svc), []byte("x"), 5*time.Second); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatal("calls did not wake the stall watch")
	}
	parked(true) // and it parks again
}
