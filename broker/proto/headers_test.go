package proto_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
)

func hdr(kv ...string) map[string][]string {
	h := map[string][]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}

func TestSetError(t *testing.T) {
	h := map[string][]string{}
	proto.SetError(h, proto.Errorf(proto.CodeNotRegistered, "service %s not registered", "A/B/C"))
	want := map[string]string{
		proto.HdrStatus:           proto.StatusError,
		proto.HdrError:            "0007/0007",
		proto.HdrServiceErrorCode: "70007",
		proto.HdrServiceError:     "service A/B/C not registered",
	}
	if len(h) != len(want) {
		t.Fatalf("SetError wrote %d headers, want %d: %v", len(h), len(want), h)
	}
	for k, v := range want {
		if got := h[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want [%q]", k, got, v)
		}
	}
}

func TestSetErrorOverwrites(t *testing.T) {
	h := hdr(proto.HdrError, "0003/0005", proto.HdrServiceError, "old", proto.HdrServiceError, "older",
		proto.HdrConv, "c1", proto.HdrStatus, proto.StatusEOC)
	proto.SetError(h, proto.ErrWaitTimeout)
	if got := h[proto.HdrError]; len(got) != 1 || got[0] != "0074/0074" {
		t.Fatalf("%s = %q", proto.HdrError, got)
	}
	if got := h[proto.HdrServiceError]; len(got) != 1 || got[0] != "wait timeout" {
		t.Fatalf("%s = %q", proto.HdrServiceError, got)
	}
	if got := h[proto.HdrStatus]; len(got) != 1 || got[0] != proto.StatusError {
		t.Fatalf("%s = %q", proto.HdrStatus, got)
	}
	if got := h[proto.HdrConv]; len(got) != 1 || got[0] != "c1" {
		t.Fatalf("SetError touched %s: %q", proto.HdrConv, got)
	}
}

func TestSetErrorEmptyDescription(t *testing.T) {
	// The micro description must not be empty; SetError falls back to the
	// code.
	h := map[string][]string{}
	proto.SetError(h, &proto.Error{Code: proto.CodeEOC})
	if got := h[proto.HdrServiceError]; len(got) != 1 || got[0] != "0003/0005" {
		t.Fatalf("%s = %q, want [0003/0005]", proto.HdrServiceError, got)
	}
	e := proto.ErrorFromHeader(h)
	if e == nil || e.Code != proto.CodeEOC || !errors.Is(e, proto.ErrEOC) {
		t.Fatalf("ErrorFromHeader = %v", e)
	}
}

func TestSetErrorFromHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		err  *proto.Error
	}{
		{"sentinel", proto.ErrConvTimeout},
		{"Errorf", proto.Errorf(proto.CodeReplicaLimit, "limit %d reached for %s", 8, "A/B/C")},
		{"muster class", proto.ErrServiceError},
		{"biggest class", proto.ErrBrokerNotActive},
		{"max code", &proto.Error{Code: code(9999, 9999), Description: "max"}},
		{"unicode description", &proto.Error{Code: proto.CodeServiceError, Description: "échec: ☃"}},
		{"multi-line description", &proto.Error{Code: proto.CodeServiceError, Description: "line1\nline2"}},
		{"description looks like a code", &proto.Error{Code: proto.CodeEOC, Description: "0007/0007"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string][]string{}
			proto.SetError(h, tt.err)
			got := proto.ErrorFromHeader(h)
			if got == nil {
				t.Fatal("ErrorFromHeader = nil")
			}
			if *got != *tt.err {
				t.Fatalf("round trip: got %+v, want %+v", *got, *tt.err)
			}
			if !errors.Is(got, tt.err) {
				t.Fatalf("errors.Is(%v, %v) = false", got, tt.err)
			}
			if n, err := strconv.Atoi(h[proto.HdrServiceErrorCode][0]); err != nil || n != tt.err.Code.Int() {
				t.Fatalf("%s = %q, want %d", proto.HdrServiceErrorCode, h[proto.HdrServiceErrorCode], tt.err.Code.Int())
			}
		})
	}
	for _, s := range allSentinels {
		h := map[string][]string{}
		proto.SetError(h, s.err)
		if got := proto.ErrorFromHeader(h); got == nil || *got != *s.err {
			t.Errorf("%s: round trip got %v, want %v", s.name, got, s.err)
		}
	}
}

func TestErrorFromHeader(t *testing.T) {
	tests := []struct {
		name     string
		h        map[string][]string
		wantNil  bool
		wantCode proto.Code
		wantDesc string // checked when not "*"
	}{
		{"nil map", nil, true, proto.Code{}, ""},
		{"empty map", hdr(), true, proto.Code{}, ""},
		{"unrelated headers", hdr(proto.HdrConv, "c1", proto.HdrStatus, proto.StatusEOC), true, proto.Code{}, ""},
		{"empty values", hdr(proto.HdrError, "", proto.HdrServiceError, "", proto.HdrServiceErrorCode, ""), true, proto.Code{}, ""},
		{"empty slices", map[string][]string{proto.HdrError: {}, proto.HdrServiceError: {}, proto.HdrServiceErrorCode: {}}, true, proto.Code{}, ""},
		{"status error alone is not an error", hdr(proto.HdrStatus, proto.StatusError), true, proto.Code{}, ""},

		{"muster error only", hdr(proto.HdrError, "0074/0074"), false, proto.CodeWaitTimeout, ""},
		{"muster error short form", hdr(proto.HdrError, "74/74"), false, proto.CodeWaitTimeout, ""},
		{"muster error with description", hdr(proto.HdrError, "0007/0007", proto.HdrServiceError, "not registered"), false, proto.CodeNotRegistered, "not registered"},
		{"muster error wins over micro code", hdr(proto.HdrError, "0003/0005", proto.HdrServiceErrorCode, "500", proto.HdrServiceError, "eoc"), false, proto.CodeEOC, "eoc"},
		{"first value used", hdr(proto.HdrError, "0003/0005", proto.HdrError, "0007/0007"), false, proto.CodeEOC, ""},

		{"bare micro error", hdr(proto.HdrServiceError, "boom", proto.HdrServiceErrorCode, "500"), false, proto.CodeServiceError, "boom"},
		{"bare micro description", hdr(proto.HdrServiceError, "boom"), false, proto.CodeServiceError, "boom"},
		{"bare micro code", hdr(proto.HdrServiceErrorCode, "400"), false, proto.CodeServiceError, ""},
		{"bare micro code that looks like ours", hdr(proto.HdrServiceErrorCode, "70007", proto.HdrServiceError, "x"), false, proto.CodeServiceError, "x"},

		{"malformed muster error", hdr(proto.HdrError, "bogus"), false, proto.CodeBadRequest, "*"},
		{"malformed muster error with micro", hdr(proto.HdrError, "7-7", proto.HdrServiceError, "boom", proto.HdrServiceErrorCode, "500"), false, proto.CodeBadRequest, "*"},
		{"five digit muster error", hdr(proto.HdrError, "00007/0007"), false, proto.CodeBadRequest, "*"},
		{"int form in muster error", hdr(proto.HdrError, "70007"), false, proto.CodeBadRequest, "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := proto.ErrorFromHeader(tt.h)
			if tt.wantNil {
				if got != nil {
					t.Fatalf("ErrorFromHeader = %+v, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("ErrorFromHeader = nil")
			}
			if got.Code != tt.wantCode {
				t.Fatalf("code = %v, want %v (%v)", got.Code, tt.wantCode, got)
			}
			if tt.wantDesc != "*" && got.Description != tt.wantDesc {
				t.Fatalf("description = %q, want %q", got.Description, tt.wantDesc)
			}
			if tt.wantCode == proto.CodeBadRequest {
				if !errors.Is(got, proto.ErrBadRequest) {
					t.Fatalf("errors.Is(%v, ErrBadRequest) = false", got)
				}
				if v := tt.h[proto.HdrError][0]; !strings.Contains(got.Description, strconv.Quote(v)) {
					t.Fatalf("description %q does not quote the bad value %q", got.Description, v)
				}
			}
		})
	}
}

func TestParseDeadline(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	abs := time.UnixMilli(1_750_000_000_123)
	maxTimeout := strconv.FormatInt(int64(365*24*time.Hour/time.Millisecond), 10)
	tests := []struct {
		name string
		h    map[string][]string
		want time.Time
		ok   bool
	}{
		{"neither", hdr(), time.Time{}, true},
		{"nil map", nil, time.Time{}, true},
		{"empty values", hdr(proto.HdrDeadline, "", proto.HdrTimeout, ""), time.Time{}, true},
		{"empty slices", map[string][]string{proto.HdrDeadline: {}, proto.HdrTimeout: {}}, time.Time{}, true},
		{"deadline", hdr(proto.HdrDeadline, "1750000000123"), abs, true},
		{"deadline 1ms", hdr(proto.HdrDeadline, "1"), time.UnixMilli(1), true},
		{"deadline max int64", hdr(proto.HdrDeadline, "9223372036854775807"), time.UnixMilli(1<<63 - 1), true},
		{"timeout", hdr(proto.HdrTimeout, "1500"), now.Add(1500 * time.Millisecond), true},
		{"timeout 1ms", hdr(proto.HdrTimeout, "1"), now.Add(time.Millisecond), true},
		{"timeout one year", hdr(proto.HdrTimeout, maxTimeout), now.Add(365 * 24 * time.Hour), true},
		{"deadline wins", hdr(proto.HdrDeadline, "1750000000123", proto.HdrTimeout, "1500"), abs, true},
		{"deadline wins over bad timeout", hdr(proto.HdrDeadline, "1750000000123", proto.HdrTimeout, "junk"), abs, true},
		{"empty deadline falls back to timeout", hdr(proto.HdrDeadline, "", proto.HdrTimeout, "10"), now.Add(10 * time.Millisecond), true},
		{"first value used", hdr(proto.HdrDeadline, "5", proto.HdrDeadline, "junk"), time.UnixMilli(5), true},

		{"deadline zero", hdr(proto.HdrDeadline, "0"), time.Time{}, false},
		{"deadline negative", hdr(proto.HdrDeadline, "-5"), time.Time{}, false},
		{"deadline not a number", hdr(proto.HdrDeadline, "soon"), time.Time{}, false},
		{"deadline float", hdr(proto.HdrDeadline, "1.5"), time.Time{}, false},
		{"deadline RFC3339", hdr(proto.HdrDeadline, "2025-03-01T12:00:00Z"), time.Time{}, false},
		{"deadline overflow", hdr(proto.HdrDeadline, "9223372036854775808"), time.Time{}, false},
		{"deadline spaces", hdr(proto.HdrDeadline, " 5"), time.Time{}, false},
		{"deadline hex", hdr(proto.HdrDeadline, "0x10"), time.Time{}, false},
		{"bad deadline does not fall back", hdr(proto.HdrDeadline, "junk", proto.HdrTimeout, "1500"), time.Time{}, false},
		{"timeout zero", hdr(proto.HdrTimeout, "0"), time.Time{}, false},
		{"timeout negative", hdr(proto.HdrTimeout, "-1"), time.Time{}, false},
		{"timeout over a year", hdr(proto.HdrTimeout, maxTimeout+"1"), time.Time{}, false},
		{"timeout just over a year", hdr(proto.HdrTimeout, strconv.FormatInt(int64(365*24*time.Hour/time.Millisecond)+1, 10)), time.Time{}, false},
		{"timeout huge", hdr(proto.HdrTimeout, "9223372036854775807"), time.Time{}, false},
		{"timeout duration syntax", hdr(proto.HdrTimeout, "5s"), time.Time{}, false},
		{"timeout float", hdr(proto.HdrTimeout, "1e3"), time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proto.ParseDeadline(tt.h, now)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseDeadline = %v", err)
				}
				if !got.Equal(tt.want) || got.IsZero() != tt.want.IsZero() {
					t.Fatalf("ParseDeadline = %v, want %v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseDeadline = %v, want error", got)
			}
			if !errors.Is(err, proto.ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			if !got.IsZero() {
				t.Fatalf("ParseDeadline returned %v with an error", got)
			}
		})
	}
}

func TestFormatDeadlineRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
	}{
		{"ms precision", time.UnixMilli(1_750_000_000_123)},
		{"truncates sub-ms", time.Unix(1_750_000_000, 123_456_789)},
		{"epoch + 1ms", time.UnixMilli(1)},
		{"local zone", time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.FixedZone("X", 3600))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := proto.FormatDeadline(tt.t)
			if s != strconv.FormatInt(tt.t.UnixMilli(), 10) {
				t.Fatalf("FormatDeadline = %q", s)
			}
			got, err := proto.ParseDeadline(hdr(proto.HdrDeadline, s), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.t.Truncate(time.Millisecond); !got.Equal(want) {
				t.Fatalf("round trip = %v, want %v", got, want)
			}
		})
	}
}

func TestParseOp(t *testing.T) {
	tests := []struct {
		name string
		h    map[string][]string
		want string
		ok   bool
	}{
		{"absent", hdr(), proto.OpCall, true},
		{"nil map", nil, proto.OpCall, true},
		{"empty value", hdr(proto.HdrOp, ""), proto.OpCall, true},
		{"empty slice", map[string][]string{proto.HdrOp: {}}, proto.OpCall, true},
		{"CALL", hdr(proto.HdrOp, "CALL"), proto.OpCall, true},
		{"NEW", hdr(proto.HdrOp, "NEW"), proto.OpNew, true},
		{"OLD", hdr(proto.HdrOp, "OLD"), proto.OpOld, true},
		{"EOC", hdr(proto.HdrOp, "EOC"), proto.OpEOC, true},
		{"CANCEL", hdr(proto.HdrOp, "CANCEL"), proto.OpCancel, true},
		{"PING", hdr(proto.HdrOp, "PING"), proto.OpPing, true},
		{"first value used", hdr(proto.HdrOp, "NEW", proto.HdrOp, "junk"), proto.OpNew, true},

		{"unknown", hdr(proto.HdrOp, "DANCE"), "", false},
		{"lower case", hdr(proto.HdrOp, "call"), "", false},
		{"padded", hdr(proto.HdrOp, " CALL"), "", false},
		{"trailing newline", hdr(proto.HdrOp, "NEW\n"), "", false},
		{"control op QUIESCE is not a client op", hdr(proto.HdrOp, proto.OpQuiesce), "", false},
		{"control op IMMED is not a client op", hdr(proto.HdrOp, proto.OpImmed), "", false},
		{"FIND belongs on the held subject only", hdr(proto.HdrOp, proto.OpFind), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proto.ParseOp(tt.h)
			if tt.ok {
				if err != nil || got != tt.want {
					t.Fatalf("ParseOp = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseOp = %q, want error", got)
			}
			if !errors.Is(err, proto.ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			if got != "" {
				t.Fatalf("ParseOp returned %q with an error", got)
			}
		})
	}
}

func TestParseKeepalive(t *testing.T) {
	tests := []struct {
		name string
		h    map[string][]string
		want time.Duration
		ok   bool
	}{
		{"absent", hdr(), 0, true},
		{"empty", hdr(proto.HdrKeepalive, ""), 0, true},
		{"500ms", hdr(proto.HdrKeepalive, "500ms"), 500 * time.Millisecond, true},
		{"minimum", hdr(proto.HdrKeepalive, "100ms"), proto.MinKeepalive, true},
		{"maximum", hdr(proto.HdrKeepalive, "1h"), proto.MaxKeepalive, true},
		{"below minimum", hdr(proto.HdrKeepalive, "99ms"), 0, false},
		{"above maximum", hdr(proto.HdrKeepalive, "61m"), 0, false},
		{"zero", hdr(proto.HdrKeepalive, "0s"), 0, false},
		{"negative", hdr(proto.HdrKeepalive, "-1s"), 0, false},
		{"bare number", hdr(proto.HdrKeepalive, "500"), 0, false},
		{"junk", hdr(proto.HdrKeepalive, "soon"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proto.ParseKeepalive(tt.h)
			if tt.ok != (err == nil) || got != tt.want {
				t.Fatalf("ParseKeepalive = %v, %v; want %v (ok %v)", got, err, tt.want, tt.ok)
			}
			if err != nil && !errors.Is(err, proto.ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
		})
	}
}
