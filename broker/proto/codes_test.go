package proto_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/musterhq/muster/broker/proto"
)

func code(class, number uint16) proto.Code { return proto.Code{Class: class, Number: number} }

// allCodes lists every code the package defines, with its expected wire
// forms.
var allCodes = []struct {
	name string
	c    proto.Code
	str  string
	num  int
}{
	{"ParticipantUnknown", proto.CodeParticipantUnknown, "0002/0002", 20002},
	{"NoConversation", proto.CodeNoConversation, "0003/0003", 30003},
	{"EOC", proto.CodeEOC, "0003/0005", 30005},
	{"Deregistered", proto.CodeDeregistered, "0003/0010", 30010},
	{"Cancelled", proto.CodeCancelled, "0003/0011", 30011},
	{"LoggedOff", proto.CodeLoggedOff, "0003/0012", 30012},
	{"PartnerTimeout", proto.CodePartnerTimeout, "0003/0067", 30067},
	{"ConvTimeout", proto.CodeConvTimeout, "0003/0073", 30073},
	{"NotRegistered", proto.CodeNotRegistered, "0007/0007", 70007},
	{"AttachRequired", proto.CodeAttachRequired, "0010/0022", 100022},
	{"ShutdownImmed", proto.CodeShutdownImmed, "0010/0050", 100050},
	{"ShutdownQuiesce", proto.CodeShutdownQuiesce, "0010/0051", 100051},
	{"AfterEOC", proto.CodeAfterEOC, "0020/0004", 200004},
	{"ReplicaLimit", proto.CodeReplicaLimit, "0021/0048", 210048},
	{"ConvLimit", proto.CodeConvLimit, "0037/0041", 370041},
	{"WaitTimeout", proto.CodeWaitTimeout, "0074/0074", 740074},
	{"BrokerNotActive", proto.CodeBrokerNotActive, "0215/0148", 2150148},
	{"BadRequest", proto.CodeBadRequest, "0900/0001", 9000001},
	{"PayloadTooBig", proto.CodePayloadTooBig, "0900/0002", 9000002},
	{"ServiceError", proto.CodeServiceError, "0900/0003", 9000003},
	{"ServiceFailing", proto.CodeServiceFailing, "0900/0004", 9000004},
	{"Unavailable", proto.CodeUnavailable, "0900/0005", 9000005},
	{"NotPermitted", proto.CodeNotPermitted, "0900/0006", 9000006},
}

// allSentinels lists every Err* sentinel with the code it must carry.
// CodeAttachRequired has no sentinel: it names the attach notification, not
// an error a caller sees.
var allSentinels = []struct {
	name string
	err  *proto.Error
	c    proto.Code
}{
	{"ParticipantUnknown", proto.ErrParticipantUnknown, proto.CodeParticipantUnknown},
	{"NoConversation", proto.ErrNoConversation, proto.CodeNoConversation},
	{"EOC", proto.ErrEOC, proto.CodeEOC},
	{"Deregistered", proto.ErrDeregistered, proto.CodeDeregistered},
	{"Cancelled", proto.ErrCancelled, proto.CodeCancelled},
	{"LoggedOff", proto.ErrLoggedOff, proto.CodeLoggedOff},
	{"PartnerTimeout", proto.ErrPartnerTimeout, proto.CodePartnerTimeout},
	{"ConvTimeout", proto.ErrConvTimeout, proto.CodeConvTimeout},
	{"NotRegistered", proto.ErrNotRegistered, proto.CodeNotRegistered},
	{"ShutdownImmed", proto.ErrShutdownImmed, proto.CodeShutdownImmed},
	{"ShutdownQuiesce", proto.ErrShutdownQuiesce, proto.CodeShutdownQuiesce},
	{"AfterEOC", proto.ErrAfterEOC, proto.CodeAfterEOC},
	{"ReplicaLimit", proto.ErrReplicaLimit, proto.CodeReplicaLimit},
	{"ConvLimit", proto.ErrConvLimit, proto.CodeConvLimit},
	{"WaitTimeout", proto.ErrWaitTimeout, proto.CodeWaitTimeout},
	{"BrokerNotActive", proto.ErrBrokerNotActive, proto.CodeBrokerNotActive},
	{"BadRequest", proto.ErrBadRequest, proto.CodeBadRequest},
	{"PayloadTooBig", proto.ErrPayloadTooBig, proto.CodePayloadTooBig},
	{"ServiceError", proto.ErrServiceError, proto.CodeServiceError},
	{"ServiceFailing", proto.ErrServiceFailing, proto.CodeServiceFailing},
	{"Unavailable", proto.ErrUnavailable, proto.CodeUnavailable},
}

func TestCodeStringInt(t *testing.T) {
	seenStr := map[string]string{}
	seenInt := map[int]string{}
	for _, tt := range allCodes {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := tt.c.Int(); got != tt.num {
				t.Errorf("Int() = %d, want %d", got, tt.num)
			}
			if tt.c == (proto.Code{}) {
				t.Errorf("code is zero")
			}
			back, err := proto.ParseCode(tt.c.String())
			if err != nil || back != tt.c {
				t.Errorf("ParseCode(%q) = %v, %v; want %v", tt.c.String(), back, err, tt.c)
			}
			if prev, ok := seenStr[tt.str]; ok {
				t.Errorf("code %s is also %s", tt.str, prev)
			}
			if prev, ok := seenInt[tt.num]; ok {
				t.Errorf("code int %d is also %s", tt.num, prev)
			}
			seenStr[tt.str], seenInt[tt.num] = tt.name, tt.name
		})
	}
}

func TestCodeFormats(t *testing.T) {
	tests := []struct {
		name string
		c    proto.Code
		str  string
		num  int
	}{
		{"zero", proto.Code{}, "0000/0000", 0},
		{"max 4-digit", code(9999, 9999), "9999/9999", 99999999},
		{"number only", code(0, 1), "0000/0001", 1},
		{"class only", code(1, 0), "0001/0000", 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := tt.c.Int(); got != tt.num {
				t.Errorf("Int() = %d, want %d", got, tt.num)
			}
		})
	}
}

func TestParseCode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want proto.Code
		ok   bool
	}{
		{"canonical", "0007/0007", code(7, 7), true},
		{"short parts", "7/7", code(7, 7), true},
		{"mixed widths", "215/0148", code(215, 148), true},
		{"zero", "0000/0000", proto.Code{}, true},
		{"single zeros", "0/0", proto.Code{}, true},
		{"max", "9999/9999", code(9999, 9999), true},
		{"muster class", "0900/0003", code(900, 3), true},

		{"empty", "", proto.Code{}, false},
		{"no slash", "0007", proto.Code{}, false},
		{"only slash", "/", proto.Code{}, false},
		{"empty class", "/0007", proto.Code{}, false},
		{"empty number", "0007/", proto.Code{}, false},
		{"five digit class", "00007/1", proto.Code{}, false},
		{"five digit number", "1/00007", proto.Code{}, false},
		{"letters", "a/b", proto.Code{}, false},
		{"trailing junk", "0007/0007x", proto.Code{}, false},
		{"leading junk", "x0007/0007", proto.Code{}, false},
		{"two slashes", "1/2/3", proto.Code{}, false},
		{"double slash", "1//2", proto.Code{}, false},
		{"plus sign", "+7/7", proto.Code{}, false},
		{"minus sign", "-7/7", proto.Code{}, false},
		{"spaces", " 7/7", proto.Code{}, false},
		{"inner space", "7/ 7", proto.Code{}, false},
		{"trailing newline", "7/7\n", proto.Code{}, false},
		{"hex", "0x7/7", proto.Code{}, false},
		{"over uint16", "65536/1", proto.Code{}, false},
		{"int form", "70007", proto.Code{}, false},
		{"unicode digits", "٧/٧", proto.Code{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proto.ParseCode(tt.in)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseCode(%q) = %v", tt.in, err)
				}
				if got != tt.want {
					t.Fatalf("ParseCode(%q) = %v, want %v", tt.in, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseCode(%q) = %v, want error", tt.in, got)
			}
			if !errors.Is(err, proto.ErrBadCode) {
				t.Fatalf("error %v does not wrap ErrBadCode", err)
			}
			if got != (proto.Code{}) {
				t.Fatalf("ParseCode(%q) returned %v with an error", tt.in, got)
			}
		})
	}
}

func TestSentinels(t *testing.T) {
	for _, tt := range allSentinels {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err.Code != tt.c {
				t.Fatalf("code = %v, want %v", tt.err.Code, tt.c)
			}
			if tt.err.Description == "" {
				t.Fatal("sentinel has no description")
			}
			if !errors.Is(tt.err, tt.err) {
				t.Fatal("errors.Is(sentinel, sentinel) = false")
			}
			// Only its own code matches.
			for _, other := range allSentinels {
				if other.c == tt.c {
					continue
				}
				if errors.Is(tt.err, other.err) {
					t.Fatalf("errors.Is(%v, %v) = true", tt.err, other.err)
				}
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *proto.Error
		want string
	}{
		{"with description", &proto.Error{Code: proto.CodeWaitTimeout, Description: "wait timeout"}, "muster: 0074/0074 wait timeout"},
		{"without description", &proto.Error{Code: proto.CodeNotRegistered}, "muster: 0007/0007"},
		{"Errorf", proto.Errorf(proto.CodeNotRegistered, "service %s not registered", "A/B/C"), "muster: 0007/0007 service A/B/C not registered"},
		{"Errorf no args", proto.Errorf(proto.CodeEOC, "done"), "muster: 0003/0005 done"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Fatalf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorIs(t *testing.T) {
	custom := proto.Errorf(proto.CodeConvTimeout, "conversation %s idle for %ds", "c1", 30)
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"same sentinel", proto.ErrConvTimeout, proto.ErrConvTimeout, true},
		{"same code other description", custom, proto.ErrConvTimeout, true},
		{"sentinel matches custom target", proto.ErrConvTimeout, custom, true},
		{"no description", &proto.Error{Code: proto.CodeConvTimeout}, proto.ErrConvTimeout, true},
		{"different code", custom, proto.ErrWaitTimeout, false},
		{"same class other number", &proto.Error{Code: proto.CodeEOC}, proto.ErrCancelled, false},
		{"wrapped once", fmt.Errorf("call: %w", custom), proto.ErrConvTimeout, true},
		{"wrapped twice", fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", custom)), proto.ErrConvTimeout, true},
		{"wrapped other code", fmt.Errorf("call: %w", custom), proto.ErrEOC, false},
		{"joined", errors.Join(io.EOF, custom), proto.ErrConvTimeout, true},
		{"multi %w", fmt.Errorf("%w and %w", io.EOF, proto.ErrNotRegistered), proto.ErrNotRegistered, true},
		{"not an Error", io.EOF, proto.ErrConvTimeout, false},
		{"Error vs plain target", custom, io.EOF, false},
		{"printed not wrapped", fmt.Errorf("call: %v", custom), proto.ErrConvTimeout, false},
		{"nil err", nil, proto.ErrConvTimeout, false},
		{"cause from %w", proto.Errorf(proto.CodeBrokerNotActive, "publish: %w", io.ErrClosedPipe), io.ErrClosedPipe, true},
		{"cause from two %w", proto.Errorf(proto.CodeBrokerNotActive, "%w, %w", io.EOF, io.ErrClosedPipe), io.ErrClosedPipe, true},
		{"code still matches with a cause", proto.Errorf(proto.CodeBrokerNotActive, "publish: %w", io.EOF), proto.ErrBrokerNotActive, true},
		{"no cause from %v", proto.Errorf(proto.CodeBrokerNotActive, "publish: %v", io.EOF), io.EOF, false},
		{"Cause field", &proto.Error{Code: proto.CodeWaitTimeout, Cause: io.EOF}, io.EOF, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.want {
				t.Fatalf("errors.Is(%v, %v) = %v, want %v", tt.err, tt.target, got, tt.want)
			}
		})
	}
}

func TestErrorAs(t *testing.T) {
	err := fmt.Errorf("ctx: %w", proto.Errorf(proto.CodeReplicaLimit, "limit %d", 4))
	var e *proto.Error
	if !errors.As(err, &e) {
		t.Fatal("errors.As failed")
	}
	if e.Code != proto.CodeReplicaLimit || e.Description != "limit 4" {
		t.Fatalf("got %+v", e)
	}
}

// TestErrorCause checks that Errorf's %w operand is the Cause, formatted
// into the description as %v would, and that the Cause never travels.
func TestErrorCause(t *testing.T) {
	e := proto.Errorf(proto.CodeBrokerNotActive, "publish: %w", io.ErrClosedPipe)
	if e.Description != "publish: "+io.ErrClosedPipe.Error() {
		t.Fatalf("description %q", e.Description)
	}
	if !errors.Is(e.Cause, io.ErrClosedPipe) || !errors.Is(errors.Unwrap(e), io.ErrClosedPipe) {
		t.Fatalf("cause %v, Unwrap %v: want io.ErrClosedPipe", e.Cause, errors.Unwrap(e))
	}
	if plain := proto.Errorf(proto.CodeBadRequest, "n=%d", 1); plain.Cause != nil {
		t.Fatalf("Errorf without %%w has cause %v", plain.Cause)
	}
	h := map[string][]string{}
	proto.SetError(h, e)
	got := proto.ErrorFromHeader(h)
	if got == nil || got.Code != e.Code || got.Description != e.Description || got.Cause != nil {
		t.Fatalf("through headers: %#v, want code and description only", got)
	}
	if errors.Is(got, io.ErrClosedPipe) {
		t.Fatal("the cause travelled in headers")
	}
}
