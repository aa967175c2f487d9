package adminops

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/testutil"
)

// serve answers requests on subject with f until the test ends.
func serve(t *testing.T, nc *nats.Conn, subject string, f func(*nats.Msg) *nats.Msg) {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		r := f(m)
		r.Subject = m.Reply
		_ = nc.PublishMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestSetIsolation(t *testing.T) {
	s := testutil.StartNATS(t)
	nc, host := testutil.Connect(t, s), testutil.Connect(t, s)
	ctx := testutil.Context(t, 5*time.Second)
	serve(t, host, proto.AttachControlSubject("h1"), func(m *nats.Msg) *nats.Msg {
		ai := proto.AttachInfo{ID: "h1", Isolated: m.Header.Get(proto.HdrOp) == proto.OpIsolate}
		b, _ := json.Marshal(ai)
		return &nats.Msg{Data: b}
	})
	for _, on := range []bool{true, false} {
		ai, err := SetIsolation(ctx, nc, "h1", on)
		if err != nil || ai.ID != "h1" || ai.Isolated != on {
			t.Errorf("SetIsolation(%v) = %+v, %v", on, ai, err)
		}
	}
	if _, err := SetIsolation(ctx, nc, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown host: %v, want ErrNotFound", err)
	}
	if _, err := SetIsolation(ctx, nc, "a.b", true); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad id: %v, want ErrInvalid", err)
	}
	// An error reply is returned as such.
	serve(t, host, proto.AttachControlSubject("h2"), func(*nats.Msg) *nats.Msg {
		m := &nats.Msg{Header: nats.Header{}}
		proto.SetError(m.Header, proto.Errorf(proto.CodeUnavailable, "disk full"))
		return m
	})
	var pe *proto.Error
	if _, err := SetIsolation(ctx, nc, "h2", true); !errors.As(err, &pe) || pe.Code != proto.CodeUnavailable {
		t.Errorf("error reply: %v", err)
	}
}

func TestStopReplica(t *testing.T) {
	s := testutil.StartNATS(t)
	nc, rep := testutil.Connect(t, s), testutil.Connect(t, s)
	ctx := testutil.Context(t, 5*time.Second)
	ops := make(chan string, 2)
	serve(t, rep, proto.ControlSubject("r1"), func(m *nats.Msg) *nats.Msg {
		ops <- m.Header.Get(proto.HdrOp)
		return &nats.Msg{}
	})
	for now, want := range map[bool]string{false: proto.OpQuiesce, true: proto.OpImmed} {
		if err := StopReplica(ctx, nc, "r1", now); err != nil {
			t.Fatal(err)
		}
		if got := <-ops; got != want {
			t.Errorf("now=%v sent %s, want %s", now, got, want)
		}
	}
	if err := StopReplica(ctx, nc, "r2", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown replica: %v, want ErrNotFound", err)
	}
}

func TestResetService(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 5*time.Second)
	const svc = "A/B/C"
	if _, err := ResetService(ctx, nc, svc); !errors.Is(err, ErrNotFound) {
		t.Errorf("no attach manager: %v, want ErrNotFound", err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: proto.AttachBucket})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"h2", "h1", "h3"} {
		services := []string{svc}
		if id == "h3" {
			services = []string{"X/Y/Z"} // offers another service: stays silent
		}
		b, _ := json.Marshal(proto.AttachInfo{ID: id, Services: services, HeartbeatMS: 60000, Updated: time.Now().UnixMilli()})
		if _, err := kv.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
		if id == "h3" {
			continue
		}
		serve(t, testutil.Connect(t, s), proto.AttachResetPrefix+">", func(m *nats.Msg) *nats.Msg {
			b, _ := json.Marshal(proto.AttachReset{Attach: id, Service: svc, WasFailing: "exit 1", Probe: true})
			return &nats.Msg{Data: b}
		})
	}
	res, err := ResetService(ctx, nc, svc)
	if err != nil {
		t.Fatal(err)
	}
	if res.Offering != 2 || len(res.Reset) != 2 || res.Reset[0].Attach != "h1" || res.Reset[1].Attach != "h2" {
		t.Errorf("reset %+v", res)
	}
	if _, err := ResetService(ctx, nc, "nope"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad service: %v, want ErrInvalid", err)
	}
}

func TestSetPlacement(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	ctx := testutil.Context(t, 5*time.Second)
	const svc = "A/B/C"
	if err := SetPlacement(ctx, nc, svc, "memory"); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, proto.PoolBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, proto.PoolServiceKey(proto.MustService(svc)))
	if err != nil || string(e.Value()) != `{"placement":"memory"}` {
		t.Fatalf("pool record %v, %v", e, err)
	}
	if err := SetPlacement(ctx, nc, svc, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, proto.PoolServiceKey(proto.MustService(svc))); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("after reset: %v, want the key deleted", err)
	}
	if err := SetPlacement(ctx, nc, svc, "fastest"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown scheme: %v, want ErrInvalid", err)
	}
}

func TestReadLog(t *testing.T) {
	s := testutil.StartNATS(t)
	nc, host := testutil.Connect(t, s), testutil.Connect(t, s)
	ctx := testutil.Context(t, 5*time.Second)
	serve(t, host, proto.AttachLogsSubject("h1"), func(m *nats.Msg) *nats.Msg {
		var req proto.LogRequest
		_ = json.Unmarshal(m.Data, &req)
		r := &nats.Msg{Header: nats.Header{}}
		if req.Replica == "gone" {
			proto.SetError(r.Header, proto.Errorf(proto.CodeParticipantUnknown, "no log of replica gone"))
			return r
		}
		r.Data = []byte("log of " + req.Replica)
		r.Header.Set(proto.HdrLogOffset, strconv.FormatInt(req.Offset+100, 10))
		r.Header.Set(proto.HdrLogSize, "1000")
		r.Header.Set(proto.HdrLogFile, "/var/log/x.log")
		return r
	})
	c, err := ReadLog(ctx, nc, "h1", "r1", 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Data) != "log of r1" || c.Offset != 107 || c.Size != 1000 || c.File != "/var/log/x.log" || c.End() != 116 {
		t.Errorf("chunk %+v", c)
	}
	if _, err := ReadLog(ctx, nc, "h1", "gone", 0, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing replica log: %v, want ErrNotFound", err)
	}
	if _, err := ReadLog(ctx, nc, "h9", "", 0, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown host: %v, want ErrNotFound", err)
	}
}
