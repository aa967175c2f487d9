package proto

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Header names (NATS headers are case-sensitive; use them exactly).
const (
	// HdrOp is the operation of a client message: OpCall, OpNew, OpOld,
	// OpEOC, OpCancel or OpPing. Absent means OpCall, so a plain NATS
	// request to a warm subject is a call.
	HdrOp = "Muster-Op"
	// HdrConv is the conversation id (replies to OpNew carry it; OLD, EOC
	// and CANCEL messages must carry it).
	HdrConv = "Muster-Conv"
	// HdrReplica is the replica id, in every reply from a replica.
	HdrReplica = "Muster-Replica"
	// HdrDeadline is the caller's absolute deadline, Unix milliseconds. The
	// broker refuses requests already past it (0074/0074) and stamps the
	// queued copy with a Nats-TTL so the stream drops it after; a replica
	// that pulls a request past it answers 0074/0074 and never starts it.
	// The Go client reports 0074/0074 itself when its deadline passes.
	HdrDeadline = "Muster-Deadline"
	// HdrTimeout is a relative deadline in milliseconds, for plain clients
	// that cannot compute an absolute one. HdrDeadline wins if both are set.
	HdrTimeout = "Muster-Timeout"
	// HdrReply is set by the broker on queued requests: the subject the
	// reply goes to (the caller's reply inbox). On HeldSubject (FIND,
	// CANCEL) it names the request meant by that reply subject.
	HdrReply = "Muster-Reply"
	// HdrKeepalive, on OpNew, is a Go duration (ParseKeepalive): the
	// client promises a message for the conversation (at least a PING) at
	// least that often, and the replica ends the conversation (0003/0012)
	// after 3 keepalives without one.
	HdrKeepalive = "Muster-Keepalive"
	// HdrNotify is a client-chosen subject, sent with OpNew, on which the
	// replica publishes conversation events (Muster-Status "ended") that
	// happen while the client is not waiting for a reply.
	HdrNotify = "Muster-Notify"
	// HdrBare "1", on a replica's reply to OpNew, invites the client to
	// send the conversation's OLD messages bare: no headers at all, with
	// the Muster-Notify subject of the NEW as their reply subject, which
	// names the conversation to the replica (PROTOCOL.md §6.4).
	HdrBare = "Muster-Bare"
	// HdrBareReplies "1", on OpNew, says the client takes the replica's
	// reply to the NEW and the reply that ends the conversation without
	// headers (PROTOCOL.md §6.4): when the replica routes the
	// conversation's OLDs bare, it then names itself and the conversation
	// in the reply subject of its reply to NEW (ConvReplySubject) and the
	// end in the reply subject of the ending reply (EOCReplySubject). A
	// header block costs every party a share of a message's CPU.
	HdrBareReplies = "Muster-Bare-Replies"
	// HdrProgress "1" asks for interim status messages (StatusWorking,
	// StatusQueued) before the reply. Plain clients leave it out and get
	// exactly one reply.
	HdrProgress = "Muster-Progress"
	// HdrStatus marks what a message from Muster is (see Status*). Absent
	// means a plain reply and the conversation (if any) goes on.
	HdrStatus = "Muster-Status"
	// HdrError carries the EntireX-style code "CCCC/NNNN" of an error reply.
	HdrError = "Muster-Error"
	// HdrServiceError and HdrServiceErrorCode are the NATS micro
	// convention: description and numeric code (Code.Int).
	HdrServiceError     = "Nats-Service-Error"
	HdrServiceErrorCode = "Nats-Service-Error-Code"
	// HdrEnqueued is set by the broker on queued requests: Unix ms when
	// the request was queued.
	HdrEnqueued = "Muster-Enqueued"
	// HdrSeq is set by the broker on its "queued" status: the request's
	// sequence in the queue stream, which a caller that lost its
	// connection asks about (FIND on the broker subject).
	HdrSeq = "Muster-Seq"
	// HdrOnce "1" on a CALL or NEW sent to the broker says its reply
	// subject names this request alone: the broker queues it at most once
	// per reply subject within the queue stream's duplicate window
	// (DedupWindow), so a caller that heard nothing back may send it
	// again. The broker answers a repeat with the first copy's "queued".
	HdrOnce = "Muster-Once"
	// HdrNATSStatus is the header NATS itself uses for status (503 = no responders).
	HdrNATSStatus = "Status"
)

// DedupWindow is the queue stream's duplicate window: how long the broker
// remembers the reply subject of a request sent with HdrOnce. A caller
// resends only well within it.
const DedupWindow = 2 * time.Minute

// Operations (values of HdrOp).
const (
	OpCall   = "CALL"
	OpNew    = "NEW"
	OpOld    = "OLD"
	OpEOC    = "EOC"
	OpCancel = "CANCEL"
	OpPing   = "PING"
	// OpFind asks, on HeldSubject, which replica holds a request.
	OpFind = "FIND"
	// Control operations, sent to ControlSubject.
	OpQuiesce = "QUIESCE"
	OpImmed   = "IMMED"
)

// Statuses (values of HdrStatus).
const (
	StatusEOC     = "eoc"     // reply, and the replica ended the conversation after it
	StatusWorking = "working" // interim: a replica (HdrReplica) has the request
	StatusQueued  = "queued"  // interim: the broker queued the request
	StatusEnded   = "ended"   // event on HdrNotify: conversation ended, HdrError says why
	StatusError   = "error"   // error reply (HdrError, HdrServiceError set)
)

// ErrBadHeader is wrapped by header parse errors.
var ErrBadHeader = errors.New("proto: bad header")

// ParseDeadline reads HdrDeadline, or else HdrTimeout relative to now. It
// returns the zero time when neither is set.
func ParseDeadline(h map[string][]string, now time.Time) (time.Time, error) {
	if v := get(h, HdrDeadline); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			return time.Time{}, fmt.Errorf("%w: %s %q: want Unix milliseconds", ErrBadHeader, HdrDeadline, v)
		}
		return time.UnixMilli(ms), nil
	}
	if v := get(h, HdrTimeout); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 || ms > int64(365*24*time.Hour/time.Millisecond) {
			return time.Time{}, fmt.Errorf("%w: %s %q: want milliseconds > 0", ErrBadHeader, HdrTimeout, v)
		}
		return now.Add(time.Duration(ms) * time.Millisecond), nil
	}
	return time.Time{}, nil
}

// Keepalive bounds (HdrKeepalive).
const (
	MinKeepalive = 100 * time.Millisecond
	MaxKeepalive = time.Hour
)

// ParseKeepalive reads HdrKeepalive: 0 when absent, else a Go duration
// between MinKeepalive and MaxKeepalive.
func ParseKeepalive(h map[string][]string) (time.Duration, error) {
	v := get(h, HdrKeepalive)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < MinKeepalive || d > MaxKeepalive {
		return 0, fmt.Errorf("%w: %s %q: want a Go duration from %v to %v", ErrBadHeader, HdrKeepalive, v, MinKeepalive, MaxKeepalive)
	}
	return d, nil
}

// FormatDeadline renders t for HdrDeadline.
func FormatDeadline(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// ParseOp reads HdrOp; absent means OpCall.
func ParseOp(h map[string][]string) (string, error) {
	switch op := get(h, HdrOp); op {
	case "":
		return OpCall, nil
	case OpCall, OpNew, OpOld, OpEOC, OpCancel, OpPing:
		return op, nil
	default:
		return "", fmt.Errorf("%w: %s %q: want one of CALL NEW OLD EOC CANCEL PING", ErrBadHeader, HdrOp, op)
	}
}

// SetError writes e into headers h (HdrStatus, HdrError and the micro pair).
func SetError(h map[string][]string, e *Error) {
	h[HdrStatus] = []string{StatusError}
	h[HdrError] = []string{e.Code.String()}
	h[HdrServiceErrorCode] = []string{strconv.Itoa(e.Code.Int())}
	desc := e.Description
	if desc == "" {
		desc = e.Code.String()
	}
	h[HdrServiceError] = []string{desc}
}

// ErrorFromHeader returns the *Error that headers h carry, or nil when they
// carry none. HdrError wins; a bare micro error (from a non-Muster
// responder) becomes CodeServiceError with its description.
func ErrorFromHeader(h map[string][]string) *Error {
	desc := get(h, HdrServiceError)
	if v := get(h, HdrError); v != "" {
		c, err := ParseCode(v)
		if err != nil {
			return &Error{Code: CodeBadRequest, Description: "reply carried " + err.Error()}
		}
		if desc == v {
			desc = "" // SetError's stand-in for an empty description
		}
		return &Error{Code: c, Description: desc}
	}
	if desc != "" || get(h, HdrServiceErrorCode) != "" {
		return &Error{Code: CodeServiceError, Description: desc}
	}
	return nil
}

func get(h map[string][]string, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}
