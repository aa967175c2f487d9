package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// A slow warm call, which the dispatcher serves inline, does not hold up
// the calls that come while it runs: the stall timer hands them to the
// workers, up to the replica's capacity. The slow call is released only
// after the others were answered, so without the watch they would wait
// for it and miss their deadline.
func TestSlowInlineCallDoesNotHoldUpOthers(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	const svc = "T/STALL/X"
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	entered := make(chan struct{})
	done := runReplica(t, context.Background(), func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if string(m.Data) == "slow" {
			close(entered)
			<-release
		}
		return c.Reply(m.Data)
	}, worker.WithConn(testutil.Connect(t, s)), worker.WithService(svc), worker.WithReplicaID("st1"), worker.WithCapacity(4))
	subj := proto.WarmSubject(proto.MustService(svc))
	slow := make(chan error, 1)
	go func() {
		_, err := nc.Request(subj, []byte("slow"), 20*time.Second)
		slow <- err
	}()
	<-entered
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ { // capacity 4: the slow one and three more
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := nc.Request(subj, []byte("fast"), 5*time.Second)
			if err == nil && string(r.Data) != "fast" {
				err = proto.Errorf(proto.CodeServiceError, "reply %q (%v)", r.Data, proto.ErrorFromHeader(r.Header))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a call behind a slow one: %v", err)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow call ended before it was released: %v", err)
	default:
	}
	free()
	if err := <-slow; err != nil {
		t.Fatalf("slow call: %v", err)
	}
	control(t, nc, "st1", proto.OpImmed)
	waitRun(t, done, 10*time.Second)
}
