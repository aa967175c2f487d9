package broker_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestMisleadingCodes: a far-future deadline or timeout is a bad request
// (0900/0001), and a request whose queued copy would be too large is too
// big (0900/0002), never 0215/0148 "broker not active".
func TestMisleadingCodes(t *testing.T) {
	e := harness.Start(t, broker.Config{})
	const svc = "T/CODES/SVC"
	harness.RegisterAttach(t, e, "codes-attach", svc)
	nc := testutil.Connect(t, e.Server)
	ask := func(h map[string]string, body []byte) *proto.Error {
		t.Helper()
		m := nats.NewMsg(proto.CallSubject(proto.MustService(svc)))
		for k, v := range h {
			m.Header.Set(k, v)
		}
		m.Data = body
		r, err := nc.RequestMsgWithContext(testutil.Context(t, 5*time.Second), m)
		if err != nil {
			t.Fatal(err)
		}
		return proto.ErrorFromHeader(r.Header)
	}
	far := strconv.FormatInt(time.Now().Add(300*24*time.Hour).UnixMilli(), 10)
	for name, h := range map[string]map[string]string{
		"far deadline":    {proto.HdrDeadline: far},
		"absurd deadline": {proto.HdrDeadline: "9000000000000000"},
		"far timeout":     {proto.HdrTimeout: strconv.FormatInt((300 * 24 * time.Hour).Milliseconds(), 10)},
	} {
		if got := ask(h, nil); got == nil || got.Code != proto.CodeBadRequest || !strings.Contains(got.Description, "at most 24h") {
			t.Errorf("%s: got %v; want 0900/0001 naming the 24h limit", name, got)
		}
	}
	// Headers of 70 KB: the client can send them (under max_payload), the
	// stream refuses them (64 KiB of headers at most).
	if got := ask(map[string]string{"X-Big": strings.Repeat("x", 70000)}, nil); got == nil || got.Code != proto.CodePayloadTooBig {
		t.Errorf("oversized header: got %v; want 0900/0002", got)
	}
	// A body that fits for the client but not once the broker adds its headers.
	if got := ask(nil, make([]byte, int(nc.MaxPayload())-60)); got == nil || got.Code != proto.CodePayloadTooBig {
		t.Errorf("request at the payload limit: got %v; want 0900/0002", got)
	}
}
