package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

// TestBareOld: a NEW that names a notify subject ending in a secret (22
// characters or more) is answered with Muster-Bare: 1, and from then on a
// message with no headers on the replica's private subject, whose reply
// subject is that notify subject, is an OLD of that conversation. A
// second NEW naming the same subject does not take it over (no
// Muster-Bare for it; bare messages still go to the first). After the
// end, a bare message gets the end reason, and a NEW with that subject is
// not offered bare OLDs while the tombstone is there (a late bare OLD for
// the ended one must get its end, not go to the new one). A bare message
// whose reply subject names no conversation gets 0003/0003 (no
// conversation), never a CALL's treatment; a notify subject whose last
// token is too short to be a secret gets no Muster-Bare.
func TestBareOld(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	const svc = "T/BARE/X"
	ctx, cancel := context.WithCancel(context.Background())
	done := runReplica(t, ctx, func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return nil
			}
			if len(m.Header) != 0 && m.Seq > 1 {
				t.Errorf("message %d reached the handler with headers %v", m.Seq, m.Header)
			}
			out := []byte(c.ID() + ":" + string(m.Data))
			if string(m.Data) == "bye" {
				return c.ReplyEnd(out)
			}
			if err := c.Reply(out); err != nil {
				return err
			}
		}
	}, worker.WithConn(testutil.Connect(t, s)), worker.WithService(svc), worker.WithReplicaID("bare1"), worker.WithCapacity(4))
	t.Cleanup(func() {
		cancel()
		waitRun(t, done, 10*time.Second)
	})
	var openWith func(string) *nats.Msg
	notify := "_INBOX.bare.7-" + nuid.Next() // 22 random characters
	open := func() *nats.Msg {
		t.Helper()
		return openWith(notify)
	}
	openWith = func(notify string) *nats.Msg {
		t.Helper()
		m := nats.NewMsg(proto.WarmSubject(proto.MustService(svc)))
		m.Header.Set(proto.HdrOp, proto.OpNew)
		m.Header.Set(proto.HdrNotify, notify)
		r, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if e := proto.ErrorFromHeader(r.Header); e != nil {
			t.Fatal(e)
		}
		return r
	}
	first := open()
	if first.Header.Get(proto.HdrBare) != "1" {
		t.Fatalf("reply to NEW with a notify subject: headers %v, want %s: 1", first.Header, proto.HdrBare)
	}
	conv := first.Header.Get(proto.HdrConv)
	// A bare OLD: the reply subject is the notify subject, so the answer
	// comes to a subscription on it.
	sub, err := nc.SubscribeSync(notify)
	if err != nil {
		t.Fatal(err)
	}
	bare := func(data string) *nats.Msg {
		t.Helper()
		if err := nc.PublishMsg(&nats.Msg{Subject: proto.ReplicaSubject("bare1"), Reply: notify, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
		r, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("bare %q: %v", data, err)
		}
		return r
	}
	if r := bare("two"); string(r.Data) != conv+":two" || len(r.Header) != 0 {
		t.Fatalf("bare OLD: %q %v, want %q with no headers", r.Data, r.Header, conv+":two")
	}
	second := open()
	if second.Header.Get(proto.HdrBare) != "" {
		t.Errorf("a second NEW with the same notify subject was offered bare OLDs: %v", second.Header)
	}
	if r := bare("three"); string(r.Data) != conv+":three" {
		t.Fatalf("bare OLD after a second NEW with its notify subject: %q, want the first conversation's %q", r.Data, conv+":three")
	}
	if e := proto.ErrorFromHeader(rawOp(t, nc, "bare1", second.Header.Get(proto.HdrConv), proto.OpEOC).Header); e != nil {
		t.Fatalf("EOC for the second conversation: %v", e)
	}
	if r := bare("bye"); string(r.Data) != conv+":bye" || r.Header.Get(proto.HdrStatus) != proto.StatusEOC {
		t.Fatalf("bare last OLD: %q %v, want %q ending the conversation", r.Data, r.Header, conv+":bye")
	}
	if e := proto.ErrorFromHeader(bare("late").Header); e == nil || e.Code != proto.CodeEOC {
		t.Fatalf("bare OLD after the end: %v, want the end reason %v", e, proto.ErrEOC)
	}
	third := open()
	if third.Header.Get(proto.HdrBare) != "" {
		t.Errorf("a NEW naming the notify subject of an ended conversation, its tombstone still there, was offered bare OLDs: %v", third.Header)
	}
	if e := proto.ErrorFromHeader(bare("late again").Header); e == nil || e.Code != proto.CodeEOC {
		t.Fatalf("bare OLD for the ended conversation after a new one named its subject: %v, want the end reason %v", e, proto.ErrEOC)
	}
	if e := proto.ErrorFromHeader(rawOp(t, nc, "bare1", third.Header.Get(proto.HdrConv), proto.OpEOC).Header); e != nil {
		t.Fatalf("EOC for the third conversation: %v", e)
	}
	short := openWith("_INBOX.bare.7-" + nuid.Next()[:proto.MinNotifySecret-4])
	if short.Header.Get(proto.HdrBare) != "" {
		t.Errorf("a NEW whose notify subject ends in a token too short for a secret was offered bare OLDs: %v", short.Header)
	}
	if e := proto.ErrorFromHeader(rawOp(t, nc, "bare1", short.Header.Get(proto.HdrConv), proto.OpEOC).Header); e != nil {
		t.Fatalf("EOC for the short-subject conversation: %v", e)
	}
	// No conversation has this reply subject.
	r, err := nc.RequestMsg(&nats.Msg{Subject: proto.ReplicaSubject("bare1"), Data: []byte("x")}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e := proto.ErrorFromHeader(r.Header); e == nil || e.Code != proto.CodeNoConversation {
		t.Fatalf("bare message naming no conversation: %v, want %v", e, proto.CodeNoConversation)
	}
}
