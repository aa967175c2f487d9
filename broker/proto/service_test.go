package proto_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/musterhq/muster/broker/proto"
)

func sv(class, name, service string) proto.Service {
	return proto.Service{Class: class, Name: name, Service: service}
}

var (
	part32 = strings.Repeat("a", proto.MaxPartLen)
	part33 = strings.Repeat("a", proto.MaxPartLen+1)
)

func TestParseService(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want proto.Service
		ok   bool
	}{
		{"simple", "A/B/C", sv("A", "B", "C"), true},
		{"typical", "ACLASS/ASERVER/ECHO", sv("ACLASS", "ASERVER", "ECHO"), true},
		{"all allowed chars", "az-AZ_09/_-_/x-y_Z", sv("az-AZ_09", "_-_", "x-y_Z"), true},
		{"digits only", "0/1/2", sv("0", "1", "2"), true},
		{"32 chars each", part32 + "/" + part32 + "/" + part32, sv(part32, part32, part32), true},
		{"lower case kept", "acl/srv/svc", sv("acl", "srv", "svc"), true},

		{"empty string", "", proto.Service{}, false},
		{"empty class", "/B/C", proto.Service{}, false},
		{"empty name", "A//C", proto.Service{}, false},
		{"empty service", "A/B/", proto.Service{}, false},
		{"all empty", "//", proto.Service{}, false},
		{"33 char class", part33 + "/B/C", proto.Service{}, false},
		{"33 char name", "A/" + part33 + "/C", proto.Service{}, false},
		{"33 char service", "A/B/" + part33, proto.Service{}, false},
		{"one part", "ABC", proto.Service{}, false},
		{"two parts", "A/B", proto.Service{}, false},
		{"four parts", "A/B/C/D", proto.Service{}, false},
		{"trailing slash", "A/B/C/", proto.Service{}, false},
		{"leading slash", "/A/B/C", proto.Service{}, false},
		{"dot", "A.X/B/C", proto.Service{}, false},
		{"star", "A/*/C", proto.Service{}, false},
		{"gt", "A/B/>", proto.Service{}, false},
		{"space", "A/B C/D", proto.Service{}, false},
		{"leading space", " A/B/C", proto.Service{}, false},
		{"trailing newline", "A/B/C\n", proto.Service{}, false},
		{"tab", "A/B/\tC", proto.Service{}, false},
		{"backslash", `A\B/C/D`, proto.Service{}, false},
		{"colon", "A:B/C/D", proto.Service{}, false},
		{"nul", "A\x00/B/C", proto.Service{}, false},
		{"unicode letter", "Ä/B/C", proto.Service{}, false},
		{"unicode dash", "A/B\u2011C/D", proto.Service{}, false},
		{"fullwidth letter", "Ａ/B/C", proto.Service{}, false},
		{"invalid utf8", "A/\xff/C", proto.Service{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proto.ParseService(tt.in)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseService(%q) = %v", tt.in, err)
				}
				if got != tt.want {
					t.Fatalf("ParseService(%q) = %+v, want %+v", tt.in, got, tt.want)
				}
				if err := validService(got); err != nil {
					t.Fatalf("Valid() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseService(%q) = %+v, want error", tt.in, got)
			}
			if !errors.Is(err, proto.ErrBadService) {
				t.Fatalf("error %v does not wrap ErrBadService", err)
			}
			if got != (proto.Service{}) {
				t.Fatalf("ParseService(%q) returned %+v with an error, want zero Service", tt.in, got)
			}
		})
	}
}

func TestServiceValid(t *testing.T) {
	tests := []struct {
		name string
		s    proto.Service
		ok   bool
	}{
		{"good", sv("A", "B", "C"), true},
		{"zero", proto.Service{}, false},
		{"slash in part", sv("A/B", "C", "D"), false},
		{"dot in part", sv("A", "B.C", "D"), false},
		{"long part", sv("A", "B", part33), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validService(tt.s)
			if (err == nil) != tt.ok {
				t.Fatalf("Valid(%+v) = %v, want ok=%v", tt.s, err, tt.ok)
			}
			if err != nil && !errors.Is(err, proto.ErrBadService) {
				t.Fatalf("error %v does not wrap ErrBadService", err)
			}
		})
	}
}

func TestMustService(t *testing.T) {
	if got := proto.MustService("A/B/C"); got != (sv("A", "B", "C")) {
		t.Fatalf("MustService = %+v", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("MustService(bad) did not panic")
		}
	}()
	proto.MustService("A/B")
}

func TestServiceRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		tokens string
	}{
		{"simple", "A/B/C", "A.B.C"},
		{"dashes and underscores", "my-class/my_name/svc-1_x", "my-class.my_name.svc-1_x"},
		{"max length", part32 + "/" + part32 + "/" + part32, part32 + "." + part32 + "." + part32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := proto.ParseService(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tt.in {
				t.Fatalf("String() = %q, want %q", got, tt.in)
			}
			if got := s.Tokens(); got != tt.tokens {
				t.Fatalf("Tokens() = %q, want %q", got, tt.tokens)
			}
			for _, subj := range []string{
				s.Tokens(),
				proto.WarmSubject(s),
				proto.CallSubject(s),
				proto.QueueSubject(s),
				proto.NotifySubject(s),
				proto.BrokerStatsSubject + "." + s.Tokens(),
			} {
				back, err := proto.ServiceFromTokens(subj)
				if err != nil {
					t.Fatalf("ServiceFromTokens(%q) = %v", subj, err)
				}
				if back != s {
					t.Fatalf("ServiceFromTokens(%q) = %+v, want %+v", subj, back, s)
				}
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	s := proto.MustService("CL/NM/SV")
	tests := []struct {
		name, got, want string
	}{
		{"warm", proto.WarmSubject(s), "muster.svc.CL.NM.SV"},
		{"call", proto.CallSubject(s), "muster.call.CL.NM.SV"},
		{"queue", proto.QueueSubject(s), "muster.q.CL.NM.SV"},
		{"notify", proto.NotifySubject(s), "muster.attach.notify.CL.NM.SV"},
		{"replica", proto.ReplicaSubject("r-1"), "muster.rep.r-1"},
		{"control", proto.ControlSubject("r_1"), "muster.ctl.r_1"},
		{"held", proto.HeldSubject(s), "muster.held.CL.NM.SV"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
			if !strings.HasPrefix(tt.got, "muster.") {
				t.Fatalf("%q is not under muster.", tt.got)
			}
		})
	}
}

func TestServiceFromTokensErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"one token", "A"},
		{"two tokens", "A.B"},
		{"empty last token", "muster.svc.A.B."},
		{"empty middle token", "muster.svc.A..C"},
		{"wildcard", "muster.svc.A.B.*"},
		{"full wildcard", "muster.svc.A.B.>"},
		{"slash in token", "muster.svc.A/B.C.D"},
		{"long token", "muster.svc.A.B." + part33},
		{"space", "muster.svc.A.B C.D"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := proto.ServiceFromTokens(tt.in)
			if err == nil {
				t.Fatalf("ServiceFromTokens(%q) = %+v, want error", tt.in, s)
			}
			if !errors.Is(err, proto.ErrBadService) {
				t.Fatalf("error %v does not wrap ErrBadService", err)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"one char", "a", true},
		{"typical", "r-01HZX3_abc", true},
		{"digits", "0123456789", true},
		{"all classes", "azAZ09_-", true},
		{"64 chars", strings.Repeat("x", 64), true},

		{"empty", "", false},
		{"65 chars", strings.Repeat("x", 65), false},
		{"dot", "a.b", false},
		{"star", "*", false},
		{"gt", ">", false},
		{"space", "a b", false},
		{"newline", "ab\n", false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"unicode", "réplica", false},
		{"nul", "a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := proto.ValidID(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, proto.ErrBadID) {
				t.Fatalf("error %v does not wrap ErrBadID", err)
			}
		})
	}
}

// validJetStreamName mirrors nats-server's rules for stream and consumer
// names (isValidAssetName and JSMaxNameLen): not empty, at most 255 bytes,
// no whitespace, '.', '*', '>', '/' or '\\'. We are stricter and also
// require printable ASCII.
func validJetStreamName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	if strings.ContainsAny(name, " \t\r\n\f.*>\\/") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] >= 0x7f {
			return false
		}
	}
	return true
}

func TestConsumerName(t *testing.T) {
	tests := []struct {
		name string
		svc  string
		want string
	}{
		{"simple", "ABC/ECHO/X", "q3_ABC4_ECHO1_X"},
		{"dash in class", "A-B/C/D", "q3_A-B1_C1_D"},
		{"dash in name", "A/B-C/D", "q1_A3_B-C1_D"},
		{"underscore in class", "A_1/C/D", "q3_A_11_C1_D"},
		{"digits", "1/22/333", "q1_12_223_333"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := proto.ConsumerName(proto.MustService(tt.svc))
			if got != tt.want {
				t.Fatalf("ConsumerName(%s) = %q, want %q", tt.svc, got, tt.want)
			}
			if !validJetStreamName(got) {
				t.Fatalf("ConsumerName(%s) = %q is not a valid JetStream name", tt.svc, got)
			}
		})
	}
}

func TestConsumerNameValidForLongest(t *testing.T) {
	s := proto.MustService(strings.Repeat("-", 32) + "/" + strings.Repeat("_", 32) + "/" + strings.Repeat("9", 32))
	if n := proto.ConsumerName(s); !validJetStreamName(n) {
		t.Fatalf("ConsumerName = %q (%d bytes) is not a valid JetStream name", n, len(n))
	}
}

// TestConsumerNameUnique checks that services which differ only in where the
// separators fall get distinct consumer names.
func TestConsumerNameUnique(t *testing.T) {
	pairs := []struct {
		name string
		a, b string
	}{
		{"dash moves between class and name", "A-B/C/D", "A/B-C/D"},
		{"dash moves between name and service", "A/B-C/D", "A/B/C-D"},
		{"underscore moves", "A_B/C/D", "A/B_C/D"},
		{"underscore and digits", "A_1/2/3", "A/1_2/3"},
		{"digit lengths", "q1/1_x/y", "q1_1/x/y"},
		{"separator characters", "A-B/C/D", "A_B/C/D"},
		{"prefix ambiguity", "1_A/B/C", "1/A_B/C"},
	}
	for _, tt := range pairs {
		t.Run(tt.name, func(t *testing.T) {
			a, b := proto.MustService(tt.a), proto.MustService(tt.b)
			if na, nb := proto.ConsumerName(a), proto.ConsumerName(b); na == nb {
				t.Fatalf("ConsumerName(%s) == ConsumerName(%s) == %q", tt.a, tt.b, na)
			}
		})
	}

	// Exhaustive: every way of cutting a string of letters, '-', '_' and
	// digits into three non-empty parts gives a different name, and the
	// same holds across the different strings.
	seen := map[string]proto.Service{}
	for _, whole := range []string{"AB-C_D1", "a_-_b12", "1_2-3_4", "x1_1x", "--__--", "q3_A1_B"} {
		for i := 1; i < len(whole)-1; i++ {
			for j := i + 1; j < len(whole); j++ {
				s := proto.Service{Class: whole[:i], Name: whole[i:j], Service: whole[j:]}
				if err := validService(s); err != nil {
					t.Fatal(err)
				}
				n := proto.ConsumerName(s)
				if !validJetStreamName(n) {
					t.Fatalf("ConsumerName(%s) = %q is not a valid JetStream name", s, n)
				}
				if prev, ok := seen[n]; ok && prev != s {
					t.Fatalf("ConsumerName(%s) == ConsumerName(%s) == %q", s, prev, n)
				}
				seen[n] = s
			}
		}
	}
}

// validService checks every part of s, as ParseService does.
func validService(s proto.Service) error {
	_, err := proto.ParseService(s.String())
	return err
}

// TestCheckTokenMessages: errors name the offending character, not a byte
// of it, and count characters, not bytes.
func TestCheckTokenMessages(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"DÉMO", `has character 'É'`},
		{strings.Repeat("É", 20), `has character 'É'`}, // 20 characters, 40 bytes: not "longer than 32"
		{strings.Repeat("A", 33), "is longer than 32 characters"},
		{"A\xffB", "has byte 0xff, which is not UTF-8"},
	} {
		err := proto.CheckToken(tc.in, proto.MaxPartLen)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckToken(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestValidNotify: a subject that can name a conversation's bare OLDs is
// literal, has at least two tokens, is never a conversation id, and ends
// in a token long enough to hold 128 random bits.
func TestValidNotify(t *testing.T) {
	secret := strings.Repeat("s", proto.MinNotifySecret)
	for s, ok := range map[string]bool{
		"_INBOX.abc.7-" + secret:        true,
		"events." + secret:              true,
		"events." + secret[1:]:          false, // 21 characters: too short for a secret
		"_INBOX.abc.7":                  false,
		"a." + strings.Repeat("b", 253): true,
		"a." + strings.Repeat("b", 254): false, // 256 bytes
		secret:                          false, // an id
		"":                              false,
		"a.." + secret:                  false,
		"." + secret:                    false,
		secret + ".":                    false,
		"a.*." + secret:                 false,
		"a.>":                           false,
		"_INBOX.a b." + secret:          false,
		"a." + secret + "\r\n":          false,
	} {
		if got := proto.ValidNotify(s); got != ok {
			t.Errorf("ValidNotify(%q) = %v, want %v", s, got, ok)
		}
	}
}

func TestConvReplySubjects(t *testing.T) {
	s := proto.ConvReplySubject("rep1", "c-2_x")
	if s != "muster.rep.rep1.c-2_x" {
		t.Fatalf("ConvReplySubject = %q", s)
	}
	if r, c, ok := proto.ParseConvReply(s); !ok || r != "rep1" || c != "c-2_x" {
		t.Fatalf("ParseConvReply(%q) = %q, %q, %v", s, r, c, ok)
	}
	for _, bad := range []string{"", "muster.rep.rep1", "muster.rep..c", "muster.rep.r.", "muster.rep.r.c.d", "muster.eoc.r.c", "_INBOX.x.y"} {
		if r, c, ok := proto.ParseConvReply(bad); ok {
			t.Errorf("ParseConvReply(%q) = %q, %q, true; want not ok", bad, r, c)
		}
	}
	if e := proto.EOCReplySubject("c1"); e != "muster.eoc.c1" || !proto.IsEOCReply(e, "c1") {
		t.Fatalf("EOCReplySubject = %q", e)
	}
	for _, bad := range []string{"", "muster.eoc.c2", "muster.eoc.c1x", "muster.eoc.", "xmuster.eoc.c1", "muster.rep.c1"} {
		if proto.IsEOCReply(bad, "c1") {
			t.Errorf("IsEOCReply(%q, c1) = true", bad)
		}
	}
}
