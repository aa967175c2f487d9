package proto_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
)

// Reference grammars, written independently of the hand-rolled parsers.
var (
	reService = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}/[A-Za-z0-9_-]{1,32}/[A-Za-z0-9_-]{1,32}$`)
	reCode    = regexp.MustCompile(`^[0-9]{1,4}/[0-9]{1,4}$`)
	reID      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

var serviceSeeds = []string{
	"A/B/C", "ACLASS/ASERVER/ECHO", "az-AZ_09/_-_/x-y_Z", "0/1/2",
	part32 + "/" + part32 + "/" + part32, part33 + "/B/C",
	"", "/", "//", "A/B", "A/B/C/D", "A/B/", "/B/C", "A//C",
	"A.X/B/C", "A/*/C", "A/B/>", "A/B C/D", "A/B/C\n", "Ä/B/C", "A/\xff/C", "A\x00/B/C",
	"muster.svc.A.B.C", "A.B.C",
}

func FuzzParseService(f *testing.F) {
	for _, s := range serviceSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := proto.ParseService(in)
		if want := reService.MatchString(in); (err == nil) != want {
			t.Fatalf("ParseService(%q) err = %v, grammar says ok=%v", in, err, want)
		}
		if err != nil {
			if !errors.Is(err, proto.ErrBadService) {
				t.Fatalf("ParseService(%q): error %v does not wrap ErrBadService", in, err)
			}
			if s != (proto.Service{}) {
				t.Fatalf("ParseService(%q) returned %+v with an error", in, s)
			}
			return
		}
		if s.String() != in {
			t.Fatalf("ParseService(%q).String() = %q", in, s.String())
		}
		again, err := proto.ParseService(s.String())
		if err != nil || again != s {
			t.Fatalf("ParseService(String()) = %+v, %v; want %+v", again, err, s)
		}
		if err := validService(s); err != nil {
			t.Fatalf("Valid() = %v", err)
		}
		for _, subj := range []string{s.Tokens(), proto.WarmSubject(s), proto.CallSubject(s), proto.QueueSubject(s), proto.NotifySubject(s)} {
			back, err := proto.ServiceFromTokens(subj)
			if err != nil || back != s {
				t.Fatalf("ServiceFromTokens(%q) = %+v, %v; want %+v", subj, back, err, s)
			}
		}
		if n := proto.ConsumerName(s); !validJetStreamName(n) {
			t.Fatalf("ConsumerName(%+v) = %q is not a valid JetStream name", s, n)
		}
	})
}

func FuzzServiceFromTokens(f *testing.F) {
	for _, s := range []string{
		"muster.svc.A.B.C", "muster.call.ACLASS.ASERVER.ECHO", "A.B.C", "A.B", "", ".", "..", "...",
		"muster.svc.A.B.*", "muster.svc.A.B.>", "muster.svc.A/B.C.D", "x.A.B." + part33, "a..b.c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		s, err := proto.ServiceFromTokens(subject)
		if err != nil {
			if !errors.Is(err, proto.ErrBadService) {
				t.Fatalf("ServiceFromTokens(%q): error %v does not wrap ErrBadService", subject, err)
			}
			return
		}
		if err := validService(s); err != nil {
			t.Fatalf("ServiceFromTokens(%q) = %+v, which is not valid: %v", subject, s, err)
		}
		if !strings.HasSuffix(subject, s.Tokens()) {
			t.Fatalf("ServiceFromTokens(%q) = %+v, not the subject's last three tokens", subject, s)
		}
		if rest := strings.TrimSuffix(subject, s.Tokens()); rest != "" && !strings.HasSuffix(rest, ".") {
			t.Fatalf("ServiceFromTokens(%q) = %+v, not aligned on a token boundary", subject, s)
		}
	})
}

func FuzzConsumerName(f *testing.F) {
	f.Add("A-B", "C", "D", "A", "B-C", "D")
	f.Add("A_1", "2", "3", "A", "1_2", "3")
	f.Add("1_A", "B", "C", "1", "A_B", "C")
	f.Add("x", "y", "z", "x", "y", "z")
	f.Fuzz(func(t *testing.T, c1, n1, s1, c2, n2, s2 string) {
		a, b := sv(c1, n1, s1), sv(c2, n2, s2)
		if validService(a) != nil || validService(b) != nil {
			return
		}
		na, nb := proto.ConsumerName(a), proto.ConsumerName(b)
		if !validJetStreamName(na) || !validJetStreamName(nb) {
			t.Fatalf("invalid JetStream name: %q or %q", na, nb)
		}
		if (na == nb) != (a == b) {
			t.Fatalf("ConsumerName(%+v) = %q, ConsumerName(%+v) = %q", a, na, b, nb)
		}
	})
}

func FuzzParseCode(f *testing.F) {
	for _, s := range []string{
		"0007/0007", "7/7", "215/0148", "0/0", "9999/9999", "0900/0003",
		"", "/", "0007", "00007/1", "1/00007", "a/b", "0007/0007x", "1/2/3", "+7/7", "-7/7", " 7/7", "65536/1", "٧/٧",
	} {
		f.Add(s, uint16(7), uint16(7))
	}
	f.Add("", uint16(9999), uint16(0))
	f.Add("", uint16(10000), uint16(65535))
	f.Fuzz(func(t *testing.T, in string, class, number uint16) {
		c, err := proto.ParseCode(in)
		if want := reCode.MatchString(in); (err == nil) != want {
			t.Fatalf("ParseCode(%q) err = %v, grammar says ok=%v", in, err, want)
		}
		if err != nil {
			if !errors.Is(err, proto.ErrBadCode) {
				t.Fatalf("ParseCode(%q): error %v does not wrap ErrBadCode", in, err)
			}
			if c != (proto.Code{}) {
				t.Fatalf("ParseCode(%q) returned %v with an error", in, c)
			}
		} else {
			cs, ns, _ := strings.Cut(in, "/")
			wc, _ := strconv.Atoi(cs)
			wn, _ := strconv.Atoi(ns)
			if int(c.Class) != wc || int(c.Number) != wn {
				t.Fatalf("ParseCode(%q) = %+v, want {%d %d}", in, c, wc, wn)
			}
			s := c.String()
			if len(s) != 9 {
				t.Fatalf("ParseCode(%q).String() = %q, want CCCC/NNNN", in, s)
			}
			if back, err := proto.ParseCode(s); err != nil || back != c {
				t.Fatalf("ParseCode(%q) = %v, %v; want %v", s, back, err, c)
			}
			if c.Int() != wc*10000+wn {
				t.Fatalf("Int() = %d", c.Int())
			}
		}

		// Any code with parts below 10000 survives String and ParseCode.
		if class < 10000 && number < 10000 {
			want := code(class, number)
			got, err := proto.ParseCode(want.String())
			if err != nil || got != want {
				t.Fatalf("ParseCode(%q) = %v, %v; want %v", want.String(), got, err, want)
			}
		}
	})
}

func FuzzParseDeadline(f *testing.F) {
	type seed struct {
		deadline, timeout string
		mask              uint8
	}
	for _, s := range []seed{
		{"", "", 0}, {"", "", 3},
		{"1750000000123", "", 1}, {"", "1500", 2}, {"1750000000123", "1500", 3},
		{"", "10", 3}, {"junk", "1500", 3}, {"1750000000123", "junk", 3},
		{"0", "", 1}, {"-5", "", 1}, {"9223372036854775807", "", 1}, {"9223372036854775808", "", 1},
		{"", "0", 2}, {"", "-1", 2}, {"", "31536000000", 2}, {"", "31536000001", 2}, {"", "9223372036854775807", 2},
		{"+5", "", 1}, {"", "+5", 2}, {" 5", "", 1}, {"1.5", "1e3", 3}, {"0x10", "5s", 3},
	} {
		f.Add(s.deadline, s.timeout, s.mask, int64(1_750_000_000_000))
	}
	f.Add("", "1", uint8(2), int64(-1<<63))
	f.Add("", "31536000000", uint8(2), int64(1<<63-1))
	f.Fuzz(func(t *testing.T, deadline, timeout string, mask uint8, nowMS int64) {
		h := map[string][]string{}
		if mask&1 != 0 {
			h[proto.HdrDeadline] = []string{deadline}
		}
		if mask&2 != 0 {
			h[proto.HdrTimeout] = []string{timeout}
		}
		if mask&4 != 0 {
			h[proto.HdrOp] = []string{deadline} // unrelated header
		}
		if mask&9 == 9 {
			h[proto.HdrDeadline] = append(h[proto.HdrDeadline], timeout) // second value ignored
		}
		now := time.UnixMilli(nowMS)
		got, err := proto.ParseDeadline(h, now)
		if err != nil {
			if !errors.Is(err, proto.ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			if !got.IsZero() {
				t.Fatalf("ParseDeadline returned %v with an error", got)
			}
		}

		hasDeadline := mask&1 != 0 && deadline != ""
		hasTimeout := mask&2 != 0 && timeout != ""
		switch {
		case hasDeadline:
			ms, perr := strconv.ParseInt(deadline, 10, 64)
			if ok := perr == nil && ms > 0; ok != (err == nil) {
				t.Fatalf("ParseDeadline(deadline %q) err = %v, want ok=%v", deadline, err, ok)
			}
			if err == nil && got.UnixMilli() != ms {
				t.Fatalf("ParseDeadline(deadline %q) = %v (%d ms)", deadline, got, got.UnixMilli())
			}
			// Muster-Deadline wins: the timeout header makes no difference.
			h2 := map[string][]string{proto.HdrDeadline: {deadline}}
			got2, err2 := proto.ParseDeadline(h2, now)
			if !got2.Equal(got) || (err2 == nil) != (err == nil) {
				t.Fatalf("with timeout: %v, %v; without: %v, %v", got, err, got2, err2)
			}
		case hasTimeout:
			if err != nil {
				return
			}
			d := got.Sub(now)
			if d <= 0 || d > 365*24*time.Hour || d%time.Millisecond != 0 {
				t.Fatalf("ParseDeadline(timeout %q) = now + %v", timeout, d)
			}
			if ms, perr := strconv.ParseInt(timeout, 10, 64); perr != nil || time.Duration(ms)*time.Millisecond != d {
				t.Fatalf("ParseDeadline(timeout %q) = now + %v", timeout, d)
			}
		default:
			if err != nil || !got.IsZero() {
				t.Fatalf("no deadline headers: ParseDeadline = %v, %v; want zero time", got, err)
			}
		}
	})
}

func FuzzParseOp(f *testing.F) {
	for _, op := range []string{"", "CALL", "NEW", "OLD", "EOC", "CANCEL", "PING", "QUIESCE", "IMMED", "call", " CALL", "NEW\n", "DANCE"} {
		f.Add(op, true)
	}
	f.Add("NEW", false)
	f.Fuzz(func(t *testing.T, op string, present bool) {
		h := map[string][]string{}
		if present {
			h[proto.HdrOp] = []string{op}
		}
		got, err := proto.ParseOp(h)
		valid := map[string]bool{
			proto.OpCall: true, proto.OpNew: true, proto.OpOld: true,
			proto.OpEOC: true, proto.OpCancel: true, proto.OpPing: true,
		}
		switch {
		case !present || op == "":
			if err != nil || got != proto.OpCall {
				t.Fatalf("absent op: ParseOp = %q, %v; want CALL", got, err)
			}
		case valid[op]:
			if err != nil || got != op {
				t.Fatalf("ParseOp(%q) = %q, %v", op, got, err)
			}
		default:
			if err == nil || !errors.Is(err, proto.ErrBadHeader) || got != "" {
				t.Fatalf("ParseOp(%q) = %q, %v; want ErrBadHeader", op, got, err)
			}
		}
	})
}

func FuzzErrorFromHeader(f *testing.F) {
	type seed struct {
		me, se, sec string
		mask        uint8
	}
	for _, s := range []seed{
		{"", "", "", 0}, {"", "", "", 7},
		{"0074/0074", "", "", 1}, {"0007/0007", "not registered", "70007", 7}, {"74/74", "x", "", 3},
		{"", "boom", "500", 6}, {"", "boom", "", 2}, {"", "", "400", 4},
		{"bogus", "", "", 1}, {"7-7", "boom", "500", 7}, {"00007/0007", "", "", 1}, {"70007", "", "", 1},
		{"0000/0000", "", "", 1}, {"9999/9999", "\xff", "-1", 7},
	} {
		f.Add(s.me, s.se, s.sec, s.mask)
	}
	f.Fuzz(func(t *testing.T, me, se, sec string, mask uint8) {
		h := map[string][]string{}
		if mask&1 != 0 {
			h[proto.HdrError] = []string{me}
		}
		if mask&2 != 0 {
			h[proto.HdrServiceError] = []string{se}
		}
		if mask&4 != 0 {
			h[proto.HdrServiceErrorCode] = []string{sec}
		}
		if mask&8 != 0 {
			h[proto.HdrStatus] = []string{proto.StatusError}
		}
		if mask&17 == 17 {
			h[proto.HdrError] = append(h[proto.HdrError], "0003/0005") // second value ignored
		}
		got := proto.ErrorFromHeader(h)

		hasMe := mask&1 != 0 && me != ""
		hasSe := mask&2 != 0 && se != ""
		hasSec := mask&4 != 0 && sec != ""
		if !hasMe && !hasSe && !hasSec {
			if got != nil {
				t.Fatalf("no error headers: ErrorFromHeader = %+v", got)
			}
			return
		}
		if got == nil {
			t.Fatalf("ErrorFromHeader(%v) = nil", h)
		}
		desc := ""
		if hasSe {
			desc = se
		}
		switch {
		case hasMe:
			c, err := proto.ParseCode(me)
			if err != nil {
				if got.Code != proto.CodeBadRequest {
					t.Fatalf("malformed %s %q: code %v, want %v", proto.HdrError, me, got.Code, proto.CodeBadRequest)
				}
			} else if got.Code != c || got.Description != desc {
				t.Fatalf("ErrorFromHeader = %+v, want {%v %q}", got, c, desc)
			}
		default:
			if got.Code != proto.CodeServiceError || got.Description != desc {
				t.Fatalf("bare micro error: ErrorFromHeader = %+v, want {%v %q}", got, proto.CodeServiceError, desc)
			}
		}
		_ = got.Error()

		// What we read we can write back and read again unchanged.
		h2 := map[string][]string{}
		proto.SetError(h2, got)
		again := proto.ErrorFromHeader(h2)
		if again == nil || again.Code != got.Code || !errors.Is(again, got) {
			t.Fatalf("SetError/ErrorFromHeader: %+v became %+v", got, again)
		}
		if got.Description != "" && again.Description != got.Description {
			t.Fatalf("SetError/ErrorFromHeader: description %q became %q", got.Description, again.Description)
		}
	})
}

func FuzzDecodeNotification(f *testing.F) {
	for _, s := range []string{
		goodNotification,
		`{"version":1,"service":"A/B/C"}`,
		`{"version":2,"service":"A/B/C","future":true}`,
		`{"version":1,"service":"A/B/C","broker":"\u00e9\ud800","time":-1}`,
		`{"VERSION":1,"Service":"A/B/C"}`,
		`{"version":1,"service":"A/B/C","version":0}`,
		``, `null`, `{}`, `[]`, `{"version":0,"service":"A/B/C"}`, `{"version":1,"service":"A.B.C"}`,
		`{"version":1,"service":"A/B/C","missing":-1}`, `{"version":1,"service":"A/B/C","pending":99999999999999999999}`,
		goodNotification + `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := proto.DecodeNotification(b)
		if err != nil {
			if !errors.Is(err, proto.ErrBadBody) {
				t.Fatalf("error %v does not wrap ErrBadBody", err)
			}
			return
		}
		if n.Version < 1 || n.Missing < 0 || n.Replicas < 0 || n.Pending < 0 || n.Active < 0 {
			t.Fatalf("accepted invalid notification %+v", n)
		}
		if _, err := proto.ParseService(n.Service); err != nil {
			t.Fatalf("accepted notification with bad service: %v", err)
		}
		enc, err := json.Marshal(n)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", n, err)
		}
		again, err := proto.DecodeNotification(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", enc, err)
		}
		if again != n {
			t.Fatalf("re-encode round trip: %+v became %+v", n, again)
		}
	})
}

func FuzzDecodeReplicaInfo(f *testing.F) {
	for _, s := range []string{
		goodReplica,
		`{"id":"r","service":"A/B/C","capacity":1,"heartbeat_ms":1}`,
		`{"id":"r","service":"A/B/C","capacity":1,"heartbeat_ms":1000,"state":"quiescing","updated":-5,"stats":{"errors":-1}}`,
		`{"id":"r","service":"A/B/C","capacity":1,"heartbeat_ms":1000,"host":"\u00e9\ud800"}`,
		`{"ID":"r","SERVICE":"A/B/C","Capacity":1,"heartbeat_MS":1000}`,
		``, `null`, `{}`, `{"id":"r.1","service":"A/B/C","capacity":1,"heartbeat_ms":1}`,
		`{"id":"r","service":"A/B","capacity":1,"heartbeat_ms":1}`,
		`{"id":"r","service":"A/B/C","capacity":0,"heartbeat_ms":1}`,
		`{"id":"r","service":"A/B/C","capacity":1,"active":-1,"heartbeat_ms":1}`,
		`{"id":"r","service":"A/B/C","capacity":1,"heartbeat_ms":0}`,
		`{"id":"r","service":"A/B/C","capacity":1,"heartbeat_ms":1,"stats":5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := proto.DecodeReplicaInfo(b)
		if err != nil {
			if !errors.Is(err, proto.ErrBadBody) {
				t.Fatalf("error %v does not wrap ErrBadBody", err)
			}
			return
		}
		if proto.ValidID(r.ID) != nil || r.Capacity < 1 || r.Active < 0 || r.HeartbeatMS <= 0 {
			t.Fatalf("accepted invalid replica %+v", r)
		}
		if _, err := proto.ParseService(r.Service); err != nil {
			t.Fatalf("accepted replica with bad service: %v", err)
		}
		enc, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", r, err)
		}
		again, err := proto.DecodeReplicaInfo(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", enc, err)
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encode round trip: %s became %s", enc, enc2)
		}
		// A record is not expired at the moment it was written.
		if r.Expired(time.UnixMilli(r.Updated)) {
			t.Fatalf("record %+v is expired at its own update time", r)
		}
	})
}

func FuzzValidID(f *testing.F) {
	for _, s := range []string{
		"a", "r-01HZX3_abc", "azAZ09_-", strings.Repeat("x", 64), strings.Repeat("x", 65),
		"", "a.b", "*", ">", "a b", "ab\n", "a/b", `a\b`, "réplica", "a\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := proto.ValidID(id)
		if want := reID.MatchString(id); (err == nil) != want {
			t.Fatalf("ValidID(%q) = %v, grammar says ok=%v", id, err, want)
		}
		if err != nil {
			if !errors.Is(err, proto.ErrBadID) {
				t.Fatalf("ValidID(%q): error %v does not wrap ErrBadID", id, err)
			}
			return
		}
		for _, subj := range []string{proto.ReplicaSubject(id), proto.ControlSubject(id)} {
			toks := strings.Split(subj, ".")
			if len(toks) != 3 || toks[2] != id {
				t.Fatalf("subject %q does not end in the single token %q", subj, id)
			}
		}
	})
}

func FuzzDecodeAttachInfo(f *testing.F) {
	f.Add([]byte(`{"id":"web-01","host":"web","version":"1","services":["A/B/C"],"heartbeat_ms":2000,"updated":1,"failing":{"A/B/C":"crash"},"replicas":2,"max_replicas":8}`))
	f.Add([]byte(`{"id":"x","heartbeat_ms":1}`))
	f.Add([]byte(`{"id":"bad id","heartbeat_ms":1}`))
	f.Add([]byte(`{"id":"x","services":["nope"],"heartbeat_ms":1}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := proto.DecodeAttachInfo(b)
		if err != nil {
			if !errors.Is(err, proto.ErrBadBody) {
				t.Fatalf("error %v does not wrap ErrBadBody", err)
			}
			return
		}
		again, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proto.DecodeAttachInfo(again); err != nil {
			t.Fatalf("re-encoded record rejected: %v\n%s", err, again)
		}
		_ = a.Expired(time.Now())
	})
}
