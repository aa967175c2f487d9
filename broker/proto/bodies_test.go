package proto_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
)

const goodNotification = `{"version":1,"service":"ACLASS/ASERVER/ECHO","missing":2,"replicas":1,"pending":3,"active":1,"broker":"b-1","time":1750000000123}`

func TestDecodeNotification(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want proto.Notification
		ok   bool
	}{
		{"valid", goodNotification, proto.Notification{
			Version: 1, Service: "ACLASS/ASERVER/ECHO", Missing: 2, Replicas: 1, Pending: 3, Active: 1, Broker: "b-1", Time: 1750000000123,
		}, true},
		{"minimal", `{"version":1,"service":"A/B/C"}`, proto.Notification{Version: 1, Service: "A/B/C"}, true},
		{"newer version", `{"version":2,"service":"A/B/C"}`, proto.Notification{Version: 2, Service: "A/B/C"}, true},
		{"unknown field ignored", `{"version":1,"service":"A/B/C","future":true}`, proto.Notification{Version: 1, Service: "A/B/C"}, true},
		{"all zero counts", `{"version":1,"service":"A/B/C","missing":0,"replicas":0,"pending":0,"active":0}`, proto.Notification{Version: 1, Service: "A/B/C"}, true},
		{"whitespace", " \n{ \"version\" : 1 , \"service\" : \"A/B/C\" }\n", proto.Notification{Version: 1, Service: "A/B/C"}, true},

		{"empty", ``, proto.Notification{}, false},
		{"null", `null`, proto.Notification{}, false},
		{"empty object", `{}`, proto.Notification{}, false},
		{"array", `[]`, proto.Notification{}, false},
		{"truncated", goodNotification[:len(goodNotification)-1], proto.Notification{}, false},
		{"trailing data", goodNotification + `{}`, proto.Notification{}, false},
		{"not JSON", `version=1`, proto.Notification{}, false},
		{"version 0", `{"version":0,"service":"A/B/C"}`, proto.Notification{}, false},
		{"version negative", `{"version":-1,"service":"A/B/C"}`, proto.Notification{}, false},
		{"version string", `{"version":"1","service":"A/B/C"}`, proto.Notification{}, false},
		{"version float", `{"version":1.5,"service":"A/B/C"}`, proto.Notification{}, false},
		{"missing service", `{"version":1}`, proto.Notification{}, false},
		{"bad service", `{"version":1,"service":"A.B.C"}`, proto.Notification{}, false},
		{"service two parts", `{"version":1,"service":"A/B"}`, proto.Notification{}, false},
		{"service wildcard", `{"version":1,"service":"A/B/*"}`, proto.Notification{}, false},
		{"service number", `{"version":1,"service":7}`, proto.Notification{}, false},
		{"negative missing", `{"version":1,"service":"A/B/C","missing":-1}`, proto.Notification{}, false},
		{"negative replicas", `{"version":1,"service":"A/B/C","replicas":-1}`, proto.Notification{}, false},
		{"negative pending", `{"version":1,"service":"A/B/C","pending":-1}`, proto.Notification{}, false},
		{"negative active", `{"version":1,"service":"A/B/C","active":-1}`, proto.Notification{}, false},
		{"count overflow", `{"version":1,"service":"A/B/C","pending":99999999999999999999}`, proto.Notification{}, false},
		{"time float", `{"version":1,"service":"A/B/C","time":1.5}`, proto.Notification{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proto.DecodeNotification([]byte(tt.in))
			if tt.ok {
				if err != nil {
					t.Fatalf("DecodeNotification = %v", err)
				}
				if got != tt.want {
					t.Fatalf("DecodeNotification = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("DecodeNotification = %+v, want error", got)
			}
			if !errors.Is(err, proto.ErrBadBody) {
				t.Fatalf("error %v does not wrap ErrBadBody", err)
			}
		})
	}
}

func TestDecodeNotificationBadServiceWrapsErrBadService(t *testing.T) {
	_, err := proto.DecodeNotification([]byte(`{"version":1,"service":"A/B"}`))
	if !errors.Is(err, proto.ErrBadBody) || !errors.Is(err, proto.ErrBadService) {
		t.Fatalf("error %v does not wrap both ErrBadBody and ErrBadService", err)
	}
}

func TestNotificationEncodeDecode(t *testing.T) {
	n := proto.Notification{Version: proto.NotificationVersion, Service: "X/Y/Z", Missing: 1, Replicas: 2, Pending: 3, Active: 4, Broker: "b", Time: 42}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := proto.DecodeNotification(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("round trip = %+v, want %+v", got, n)
	}
	// The wire field names are part of the contract.
	for _, k := range []string{`"version":`, `"service":`, `"missing":`, `"replicas":`, `"pending":`, `"active":`, `"broker":`, `"time":`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("encoded notification %s lacks %s", b, k)
		}
	}
}

const goodReplica = `{"id":"r-1","service":"A/B/C","host":"h1","pid":42,"version":"1.2.3","state":"ready","capacity":4,"active":1,` +
	`"started":1750000000000,"heartbeat_ms":2000,"updated":1750000001000,` +
	`"stats":{"conversations":10,"messages":20,"errors":1,"bytes_in":100,"bytes_out":200,"processing_ns":3000,"queued":5}}`

// replicaJSON is goodReplica with fields replaced (nil deletes a field).
func replicaJSON(t *testing.T, repl map[string]any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(goodReplica), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range repl {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDecodeReplicaInfo(t *testing.T) {
	want := proto.ReplicaInfo{
		ID: "r-1", Service: "A/B/C", Host: "h1", PID: 42, Version: "1.2.3", State: proto.StateReady,
		Capacity: 4, Active: 1, Started: 1750000000000, HeartbeatMS: 2000, Updated: 1750000001000,
		Stats: proto.Stats{Conversations: 10, Messages: 20, Errors: 1, BytesIn: 100, BytesOut: 200, ProcessingNS: 3000, Queued: 5},
	}
	got, err := proto.DecodeReplicaInfo([]byte(goodReplica))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeReplicaInfo = %+v, want %+v", got, want)
	}

	tests := []struct {
		name string
		repl map[string]any
		raw  string // used instead of repl when set
		ok   bool
	}{
		{"quiescing", map[string]any{"state": proto.StateQuiescing}, "", true},
		{"capacity 1", map[string]any{"capacity": 1}, "", true},
		{"active 0", map[string]any{"active": 0}, "", true},
		{"no stats", map[string]any{"stats": nil}, "", true},
		{"64 char id", map[string]any{"id": strings.Repeat("i", 64)}, "", true},
		{"unknown field ignored", map[string]any{"future": 1}, "", true},

		{"empty", nil, " ", false},
		{"null", nil, "null", false},
		{"empty object", nil, "{}", false},
		{"invalid JSON", nil, `{"id":"r-1",`, false},
		{"trailing data", nil, goodReplica + "x", false},
		{"no id", map[string]any{"id": nil}, "", false},
		{"empty id", map[string]any{"id": ""}, "", false},
		{"id with dot", map[string]any{"id": "r.1"}, "", false},
		{"id with space", map[string]any{"id": "r 1"}, "", false},
		{"id too long", map[string]any{"id": strings.Repeat("i", 65)}, "", false},
		{"id number", map[string]any{"id": 1}, "", false},
		{"no service", map[string]any{"service": nil}, "", false},
		{"bad service", map[string]any{"service": "A/B"}, "", false},
		{"service with dot", map[string]any{"service": "A/B.C/D"}, "", false},
		{"capacity 0", map[string]any{"capacity": 0}, "", false},
		{"no capacity", map[string]any{"capacity": nil}, "", false},
		{"capacity negative", map[string]any{"capacity": -1}, "", false},
		{"active negative", map[string]any{"active": -1}, "", false},
		{"heartbeat 0", map[string]any{"heartbeat_ms": 0}, "", false},
		{"no heartbeat", map[string]any{"heartbeat_ms": nil}, "", false},
		{"heartbeat negative", map[string]any{"heartbeat_ms": -2000}, "", false},
		{"capacity string", map[string]any{"capacity": "4"}, "", false},
		{"stats not object", map[string]any{"stats": 5}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.raw
			if in == "" {
				in = replicaJSON(t, tt.repl)
			}
			got, err := proto.DecodeReplicaInfo([]byte(in))
			if tt.ok {
				if err != nil {
					t.Fatalf("DecodeReplicaInfo(%s) = %v", in, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("DecodeReplicaInfo(%s) = %+v, want error", in, got)
			}
			if !errors.Is(err, proto.ErrBadBody) {
				t.Fatalf("error %v does not wrap ErrBadBody", err)
			}
		})
	}
}

func TestDecodeReplicaInfoErrorsWrap(t *testing.T) {
	_, err := proto.DecodeReplicaInfo([]byte(replicaJSON(t, map[string]any{"id": "a.b"})))
	if !errors.Is(err, proto.ErrBadBody) || !errors.Is(err, proto.ErrBadID) {
		t.Fatalf("bad id: error %v does not wrap ErrBadBody and ErrBadID", err)
	}
	_, err = proto.DecodeReplicaInfo([]byte(replicaJSON(t, map[string]any{"service": "a"})))
	if !errors.Is(err, proto.ErrBadBody) || !errors.Is(err, proto.ErrBadService) {
		t.Fatalf("bad service: error %v does not wrap ErrBadBody and ErrBadService", err)
	}
}

func TestReplicaInfoEncodeDecode(t *testing.T) {
	r := proto.ReplicaInfo{
		ID: "x", Service: "A/B/C", Host: "h", PID: 1, Version: "v", State: proto.StateQuiescing, Capacity: 2, Active: 2,
		Started: 1, HeartbeatMS: 500, Updated: 2, Stats: proto.Stats{Conversations: 1, Messages: 2, Errors: 3, BytesIn: 4, BytesOut: 5, ProcessingNS: 6, Queued: 7},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := proto.DecodeReplicaInfo(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip = %+v, want %+v", got, r)
	}
	for _, k := range []string{`"id":`, `"heartbeat_ms":`, `"updated":`, `"bytes_in":`, `"processing_ns":`, `"queued":`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("encoded replica %s lacks %s", b, k)
		}
	}
}

func TestReplicaInfoExpired(t *testing.T) {
	updated := time.UnixMilli(1_750_000_000_000)
	r := proto.ReplicaInfo{HeartbeatMS: 1000, Updated: updated.UnixMilli()}
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"at update", updated, false},
		{"one heartbeat later", updated.Add(time.Second), false},
		{"exactly three heartbeats", updated.Add(3 * time.Second), false},
		{"just over three heartbeats", updated.Add(3*time.Second + time.Millisecond), true},
		{"1ns over three heartbeats", updated.Add(3*time.Second + 1), true},
		{"long after", updated.Add(time.Hour), true},
		{"clock behind (future record)", updated.Add(-time.Hour), false},
		{"zero now", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Expired(tt.now); got != tt.want {
				t.Fatalf("Expired(%v) = %v, want %v", tt.now, got, tt.want)
			}
		})
	}
}

func TestReplicaInfoExpiredExtremes(t *testing.T) {
	// An ancient record is expired whatever its heartbeat.
	old := proto.ReplicaInfo{HeartbeatMS: 1000, Updated: 1}
	if !old.Expired(time.Now()) {
		t.Error("record from 1970 with a 1s heartbeat is not expired")
	}
	// A record from the far past saturates time.Sub and is expired.
	ancient := proto.ReplicaInfo{HeartbeatMS: 1000, Updated: -1 << 62}
	if !ancient.Expired(time.Now()) {
		t.Error("record from the far past is not expired")
	}
	// A day-long heartbeat still works.
	day := proto.ReplicaInfo{HeartbeatMS: int64(24 * time.Hour / time.Millisecond), Updated: time.Now().UnixMilli()}
	if day.Expired(time.Now().Add(time.Hour)) {
		t.Error("record with a 1-day heartbeat expired after an hour")
	}
}

// Three heartbeats of an absurd heartbeat_ms would overflow time.Duration
// (HeartbeatMS > 3074457345618, ~97 years) and make a fresh record look
// expired; DecodeReplicaInfo rejects heartbeats over a day, and this test
// accepts either rejection or a correct Expired.
func TestReplicaInfoExpiredHeartbeatOverflow(t *testing.T) {
	now := time.UnixMilli(1_750_000_000_000)
	for _, hb := range []int64{3074457345619, 1 << 42, 1 << 62, 1<<63 - 1} {
		in := replicaJSON(t, map[string]any{"heartbeat_ms": hb, "updated": now.UnixMilli()})
		r, err := proto.DecodeReplicaInfo([]byte(in))
		if err != nil {
			// Rejecting an absurd heartbeat is an acceptable fix.
			if !errors.Is(err, proto.ErrBadBody) {
				t.Errorf("heartbeat_ms %d: error %v does not wrap ErrBadBody", hb, err)
			}
			continue
		}
		// Accepted: then a record is not expired one second after it was
		// written, with a heartbeat this long.
		if r.Expired(now.Add(time.Second)) {
			t.Errorf("heartbeat_ms %d accepted, but a 1s old record is Expired (3 heartbeats overflow time.Duration)", hb)
		}
	}
}

// TestBodiesAreReadLeniently pins the reader rule of docs/PROTOCOL.md §9
// for every body: unknown fields are ignored and missing optional ones stay
// zero, while anything but one JSON value fails with ErrBadBody.
func TestBodiesAreReadLeniently(t *testing.T) {
	decoders := []struct {
		name   string
		decode func([]byte) error
		min    string // smallest valid body, ending in '}'
	}{
		{"notification", func(b []byte) error { _, err := proto.DecodeNotification(b); return err },
			`{"version":1,"service":"A/B/C"}`},
		{"replica", func(b []byte) error { _, err := proto.DecodeReplicaInfo(b); return err },
			`{"id":"r","service":"A/B/C","capacity":1,"heartbeat_ms":1000}`},
		{"attach", func(b []byte) error { _, err := proto.DecodeAttachInfo(b); return err },
			`{"id":"h","heartbeat_ms":1000}`},
	}
	for _, d := range decoders {
		t.Run(d.name, func(t *testing.T) {
			withUnknown := d.min[:len(d.min)-1] + `,"added_later":{"x":[1,2]}}`
			for _, ok := range []string{d.min, withUnknown} {
				if err := d.decode([]byte(ok)); err != nil {
					t.Errorf("decode(%s) = %v, want ok", ok, err)
				}
			}
			for _, bad := range []string{d.min + d.min, d.min + "x", "[" + d.min + "]", `"` + d.min + `"`} {
				if err := d.decode([]byte(bad)); !errors.Is(err, proto.ErrBadBody) {
					t.Errorf("decode(%s) = %v, want ErrBadBody", bad, err)
				}
			}
		})
	}
}

func TestDecodeAttachInfoRejectsNegativeFigures(t *testing.T) {
	for _, body := range []string{
		`{"id":"h1","services":["A/B/C"],"heartbeat_ms":1000,"replicas":-1000000}`,
		`{"id":"h1","services":["A/B/C"],"heartbeat_ms":1000,"max_replicas":-1}`,
		`{"id":"h1","services":["A/B/C"],"heartbeat_ms":1000,"replicas":1,"starting":2}`,
	} {
		if _, err := proto.DecodeAttachInfo([]byte(body)); !errors.Is(err, proto.ErrBadBody) {
			t.Errorf("%s: err %v, want ErrBadBody", body, err)
		}
	}
}
