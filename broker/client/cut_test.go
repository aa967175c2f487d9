package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// TestCutConnectionIsNotBlamedOnTheReplica: a warm request that nobody
// holds any more is "replica gone" (0003/0012) only while the caller's own
// connection stayed up. If the connection dropped while the request was in
// flight, the transport may have lost it: the caller gets 0215/0148 ("may
// or may not have run"), not a false verdict on the replica.
//
// The stand-in for a request lost in transit is a subscriber in the warm
// queue group that swallows requests and answers no FIND.
func TestCutConnectionIsNotBlamedOnTheReplica(t *testing.T) {
	const svc = "T/CUT/X"
	for _, cut := range []bool{false, true} {
		t.Run(map[bool]string{false: "connection up", true: "connection cut"}[cut], func(t *testing.T) {
			s := testutil.StartNATS(t)
			sink := testutil.Connect(t, s, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
			took := make(chan struct{}, 1)
			if _, err := sink.QueueSubscribe(proto.WarmSubject(proto.MustService(svc)), "muster", func(*nats.Msg) {
				select {
				case took <- struct{}{}:
				default:
				}
			}); err != nil {
				t.Fatal(err)
			}
			nc := testutil.Connect(t, s, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
			c, err := client.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			errc := make(chan error, 1)
			go func() {
				_, err := c.Call(testutil.Context(t, 20*time.Second), svc, []byte("x"))
				errc <- err
			}()
			<-took
			if cut {
				s = testutil.RestartNATS(t, s, nil)
			}
			var err2 error
			select {
			case err2 = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatal("call still waiting 10s after its request was swallowed")
			}
			want := proto.ErrLoggedOff
			if cut {
				want = proto.ErrBrokerNotActive
			}
			var pe *proto.Error
			if !errors.As(err2, &pe) || !errors.Is(err2, want) {
				t.Fatalf("call: %v; want %v", err2, want.Code)
			}
		})
	}
}

// TestReplyLostInACut: a caller whose replica said "working" pings it; if
// the caller's connection drops, the replica's reply may have gone into
// the cut while the replica lives on and passes every PING. After a cut
// the caller asks whether the replica still holds the request instead,
// and ends with 0215/0148 rather than waiting to its deadline.
func TestReplyLostInACut(t *testing.T) {
	const svc, id = "T/CUT/Y", "fake1"
	s := testutil.StartNATS(t)
	fake := testutil.Connect(t, s, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	took := make(chan struct{}, 1)
	if _, err := fake.QueueSubscribe(proto.WarmSubject(proto.MustService(svc)), "muster", func(m *nats.Msg) {
		st := nats.NewMsg(m.Reply)
		st.Header.Set(proto.HdrStatus, proto.StatusWorking)
		st.Header.Set(proto.HdrReplica, id)
		_ = fake.PublishMsg(st)
		select {
		case took <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := fake.Subscribe(proto.ReplicaSubject(id), func(m *nats.Msg) { // alive: every PING answered
		a := nats.NewMsg(m.Reply)
		a.Header.Set(proto.HdrReplica, id)
		_ = m.RespondMsg(a)
	}); err != nil {
		t.Fatal(err)
	}
	nc := testutil.Connect(t, s, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(testutil.Context(t, 30*time.Second), svc, []byte("x"))
		errc <- err
	}()
	<-took
	testutil.RestartNATS(t, s, nil)
	select {
	case err := <-errc:
		if !errors.Is(err, proto.ErrBrokerNotActive) {
			t.Fatalf("call: %v; want 0215/0148", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("call still waiting 10s after the cut, though its replica no longer holds it")
	}
}
