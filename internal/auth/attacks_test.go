package auth_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/auth"
)

// The attacks of issue 9, tried with client credentials against a real
// server with the real permissions: each is refused with a permission
// violation. (A client may still call: the control case at the end.)
func TestClientAttacksRefused(t *testing.T) {
	k, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k)
	mallory := connect(t, srv, k, auth.RoleClient, auth.Scope{Name: "mallory"})
	nc := mallory.nc

	subs := []struct{ name, subject, queue string }{
		{"snoop warm requests", "muster.svc.>", ""},
		{"snoop broker calls", "muster.call.>", ""},
		{"snoop forwards", "muster.fwd.>", ""},
		{"read another client's inbox", "_INBOX.alice.>", ""},
		{"read every inbox", "_INBOX.>", ""},
		{"serve a warm subject", "muster.svc.DEMO.ECHO.ECHO", "muster"},
		{"take a replica's private subject", "muster.rep.r1", ""},
		{"take attach notifications", "muster.attach.host.host1", ""},
	}
	for _, s := range subs {
		t.Run(s.name, func(t *testing.T) {
			var err error
			if s.queue != "" {
				_, err = nc.QueueSubscribe(s.subject, s.queue, func(*nats.Msg) {})
			} else {
				_, err = nc.Subscribe(s.subject, func(*nats.Msg) {})
			}
			if err != nil {
				t.Fatal(err)
			}
			mallory.refused(t, "subscription", s.subject)
		})
	}
	pubs := []struct{ name, subject string }{
		{"IMMED on a replica's control subject", "muster.ctl.r1"},
		{"forged attach notification", "muster.attach.host.host1"},
		{"forged attach record", "$KV.muster_attach.host1"},
		{"forged replica record", "$KV.muster_replicas.r1"},
		{"steal a queued request", "$JS.API.CONSUMER.MSG.NEXT.MUSTER_QUEUE.q4_DEMO4_ECHO4_ECHO"},
		{"queue straight into the stream", "muster.q.DEMO.ECHO.ECHO"},
		{"forward as if a replica (Muster-Reply honoured)", "muster.fwd.DEMO.ECHO.ECHO"},
		{"delete the queue stream", "$JS.API.STREAM.DELETE.MUSTER_QUEUE"},
	}
	for _, p := range pubs {
		t.Run(p.name, func(t *testing.T) {
			m := nats.NewMsg(p.subject)
			m.Header.Set("Muster-Op", "IMMED")
			m.Reply = nc.NewInbox()
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			mallory.refused(t, "publish", p.subject)
		})
	}
	// Control: the same connection may still call (no responders, as
	// nobody serves: the publish is allowed).
	before := len(mallory.violations())
	if _, err := nc.Request("muster.svc.DEMO.ECHO.ECHO", nil, 2*time.Second); err != nats.ErrNoResponders {
		t.Fatalf("client call = %v, want no responders", err)
	}
	if v := mallory.violations(); len(v) != before {
		t.Fatalf("a plain call was refused: %v", v[before:])
	}
}
