package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// An armed standby takes the warm subject too, a disarmed one leaves it
// (the server has its UNSUB once its connection flushed), a missing arm
// file disarms, and a standby that quiesces while armed leaves it: a warm
// request then finds no responders rather than a replica on its way out.
func TestStandbyArming(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	svc := proto.MustService("T/ARM/W")
	file := filepath.Join(t.TempDir(), "arm")
	r := testReplica(t, testutil.Connect(t, s), svc, func(ctx context.Context, c *Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(m.Data)
	}, WithStandby(true), WithStandbyArmFile(file))
	startTestReplica(t, r)
	warm := proto.WarmSubject(svc)
	set := func(content string) {
		t.Helper()
		if content == "" {
			if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		r.rearm()
		if err := r.nc.Flush(); err != nil { // the server has the SUB or UNSUB
			t.Fatal(err)
		}
	}
	noResponders := func(what string) {
		t.Helper()
		if _, err := nc.Request(warm, []byte("x"), 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("%s: warm request: %v, want no responders", what, err)
		}
	}
	noResponders("parked")
	for _, step := range []struct{ content, what string }{
		{"1\n", ""}, {"0\n", "disarmed"}, {"1", ""}, {"", "no arm file"}, {"yes", "not \"1\""},
	} {
		set(step.content)
		r.mu.Lock()
		armed, parked := r.armedWarm != nil, r.state == stateStandby
		r.mu.Unlock()
		if !parked || armed != (step.what == "") {
			t.Fatalf("arm file %q: parked %v, armed %v", step.content, parked, armed)
		}
		if step.what != "" {
			noResponders(step.what)
		}
	}
	set("1")
	r.quiesce("test")
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	noResponders("quiescing")
	r.mu.Lock()
	armed := r.armedWarm != nil
	r.mu.Unlock()
	if armed {
		t.Fatal("still armed while quiescing")
	}
}

// The first warm request activates an armed standby and is answered; its
// warm subscription becomes the replica's warm path (no second one).
func TestArmedStandbyActivatedByWarmCall(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	svc := proto.MustService("T/ARM/ACT")
	file := filepath.Join(t.TempDir(), "arm")
	if err := os.WriteFile(file, []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := testReplica(t, testutil.Connect(t, s), svc, func(ctx context.Context, c *Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply(m.Data)
	}, WithStandby(true), WithStandbyArmFile(file), WithCapacity(2))
	startTestReplica(t, r)
	r.rearm()
	if err := r.nc.Flush(); err != nil { // the server has the SUB
		t.Fatal(err)
	}
	r.mu.Lock()
	armedSub := r.armedWarm
	r.mu.Unlock()
	if armedSub == nil {
		t.Fatal("not armed")
	}
	for i := 0; i < 3; i++ {
		if m, err := nc.Request(proto.WarmSubject(svc), []byte("hi"), 5*time.Second); err != nil || string(m.Data) != "hi" {
			t.Fatalf("warm request %d: %v", i, err)
		}
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.state != stateReady || r.joinPending || r.warm != armedSub || r.armedWarm != nil {
			return errors.New("not joined with the armed subscription as its warm path yet")
		}
		return nil
	})
}
