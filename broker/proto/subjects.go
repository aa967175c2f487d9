package proto

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Subject prefixes and names. Everything Muster puts on NATS lives under
// "muster." so that one account permission covers it.
const (
	// WarmPrefix + CLASS.NAME.SERVICE is the warm path: every replica with a
	// free conversation slot is subscribed to it in queue group WarmQueue. A
	// request there reaches a free replica in one NATS round trip, or gets
	// NATS "no responders" (status 503) at once when none is free.
	WarmPrefix = "muster.svc."
	// WarmQueue is the queue group of the warm subjects.
	WarmQueue = "muster"

	// StandbyPrefix + CLASS.NAME.SERVICE reaches the service's standby
	// replicas (queue group WarmQueue): started and connected but not
	// serving. A call or NEW there, in the warm path's format, makes the
	// standby that takes it a serving replica, which answers it. A client
	// tries it after a 503 on the warm subject and before the broker.
	StandbyPrefix = "muster.standby."
	// NewPrefix + CLASS.NAME.SERVICE takes bare NEWs: a conversation's
	// opening message with no headers at all, its reply subject the
	// client's event subject (what Muster-Notify would say). Replicas that
	// take them subscribe it in queue group WarmQueue beside the warm
	// subject, while they have a free slot (PROTOCOL.md §6.4).
	NewPrefix = "muster.new."

	// CallPrefix + CLASS.NAME.SERVICE is the broker's entry: a request there
	// is queued durably until a replica takes it, or answered at once with a
	// coded error (0007/0007 unknown service, 0900/0004 service failing,
	// 0074/0074 deadline already passed, 0900/0001 malformed). Any NATS
	// client can use it; the Go SDK uses it after a 503 on the warm subject.
	CallPrefix = "muster.call."
	// ForwardPrefix + CLASS.NAME.SERVICE is where a full replica hands the
	// brokers a warm request it cannot serve, with the caller's reply
	// subject in HdrReply. It is queued like a call; HdrReply is honoured
	// only here (a role that may publish here is a replica's), never on
	// CallPrefix, so a client cannot have its call answered into another
	// caller's inbox.
	ForwardPrefix = "muster.fwd."
	// BrokerQueue is the queue group the brokers serve CallPrefix and
	// ForwardPrefix in.
	BrokerQueue = "muster-broker"

	// QueuePrefix + CLASS.NAME.SERVICE holds queued requests in the
	// JetStream work-queue stream QueueStream. Only brokers publish there.
	QueuePrefix = "muster.q."
	// QueueStream is the JetStream stream of queued requests.
	QueueStream = "MUSTER_QUEUE"

	// ReplicaPrefix + replica id is a replica's private subject: OLD, EOC,
	// CANCEL and PING messages of its conversations go there directly.
	ReplicaPrefix = "muster.rep."
	// ControlPrefix + replica id takes QUIESCE and IMMED (deregister).
	ControlPrefix = "muster.ctl."
	// HeldPrefix + CLASS.NAME.SERVICE reaches every replica of the service
	// (no queue group): FIND and CANCEL name a call or NEW by its reply
	// subject (HdrReply), and only the replica holding it answers. A
	// client that does not know which replica took its request asks here.
	HeldPrefix = "muster.held."

	// NotifyPrefix + CLASS.NAME.SERVICE carries attach notifications
	// (Notification, JSON) from a broker to attach managers.
	NotifyPrefix = "muster.attach.notify."

	// AttachPrefix + attach manager id is where a broker sends the attach
	// notification to the one attach manager it chose for the work.
	AttachPrefix = "muster.attach.host."

	// BrokerStatsSubject answers with the broker's figures for every service
	// (BrokerStats, JSON). A request to BrokerStatsSubject + "." +
	// CLASS.NAME.SERVICE answers for one service.
	BrokerStatsSubject = "muster.broker.stats"

	// ReplicaBucket is the JetStream key-value bucket of replica
	// registrations (ReplicaInfo, JSON), keyed by replica id.
	ReplicaBucket = "muster_replicas"
)

// WarmSubject returns the warm-path subject of s.
func WarmSubject(s Service) string { return WarmPrefix + s.Tokens() }

// NewSubject returns the subject of bare NEWs of s.
func NewSubject(s Service) string { return NewPrefix + s.Tokens() }

// BareNewKeepalive is the keepalive a bare NEW asks for: the Go client's
// default, which a bare NEW cannot say (it has no Muster-Keepalive).
const BareNewKeepalive = 500 * time.Millisecond

// StandbySubject returns the subject of the standby replicas of s.
func StandbySubject(s Service) string { return StandbyPrefix + s.Tokens() }

// CallSubject returns the broker's queueing entry subject of s.
func CallSubject(s Service) string { return CallPrefix + s.Tokens() }

// ForwardSubject returns the subject a full replica of s forwards warm
// requests to.
func ForwardSubject(s Service) string { return ForwardPrefix + s.Tokens() }

// QueueSubject returns the subject queued requests of s are stored under.
func QueueSubject(s Service) string { return QueuePrefix + s.Tokens() }

// HeldSubject returns the subject on which every replica of s answers
// FIND and CANCEL for the requests it holds.
func HeldSubject(s Service) string { return HeldPrefix + s.Tokens() }

// NotifySubject returns the subject attach notifications for s are sent on.
func NotifySubject(s Service) string { return NotifyPrefix + s.Tokens() }

// AttachSubject returns the notification subject of attach manager id.
func AttachSubject(id string) string { return AttachPrefix + id }

// ErrBadID is wrapped by replica id validation errors.
var ErrBadID = errors.New("proto: bad id")

// ValidID checks a replica or conversation id: 1–64 characters of
// [A-Za-z0-9_-], so it is one subject token.
func ValidID(id string) error {
	if err := CheckToken(id, MaxIDLen); err != nil {
		return fmt.Errorf("%w: %q %v", ErrBadID, id, err)
	}
	return nil
}

// MaxIDLen is the longest replica or conversation id.
const MaxIDLen = 64

// ReplicaSubject returns the private subject of replica id.
func ReplicaSubject(id string) string { return ReplicaPrefix + id }

// EOCPrefix starts the reply subject of a bare reply that ends a
// conversation (EOCReplySubject).
const EOCPrefix = "muster.eoc."

// ConvReplySubject is the reply subject of a bare reply to NEW
// (HdrBareReplies): the replica's private subject, then the conversation
// id. Nobody subscribes to it: it names the two to the client, which
// parses it with ParseConvReply.
func ConvReplySubject(replica, conv string) string { return ReplicaPrefix + replica + "." + conv }

// ParseConvReply returns the replica and conversation ids that a bare
// reply to NEW names in its reply subject s (ConvReplySubject); ok is
// false when s is not such a subject with two valid ids.
func ParseConvReply(s string) (replica, conv string, ok bool) {
	rest, found := strings.CutPrefix(s, ReplicaPrefix)
	if !found {
		return "", "", false
	}
	replica, conv, found = strings.Cut(rest, ".")
	if !found || ValidID(replica) != nil || ValidID(conv) != nil {
		return "", "", false
	}
	return replica, conv, true
}

// EOCReplySubject is the reply subject of a bare reply that ends
// conversation conv (HdrBareReplies): "muster.eoc.<conv>". Nobody
// subscribes to it.
func EOCReplySubject(conv string) string { return EOCPrefix + conv }

// IsEOCReply reports whether s is EOCReplySubject(conv), without building it.
func IsEOCReply(s, conv string) bool {
	return len(s) == len(EOCPrefix)+len(conv) && strings.HasPrefix(s, EOCPrefix) && s[len(EOCPrefix):] == conv
}

// ControlSubject returns the control subject of replica id.
func ControlSubject(id string) string { return ControlPrefix + id }

// ConsumerName returns the durable JetStream consumer all replicas of s
// pull queued requests from. Parts may contain '-' and '_', so the name
// length-prefixes each part to stay unambiguous: "q3_ABC4_ECHO...".
func ConsumerName(s Service) string {
	return fmt.Sprintf("q%d_%s%d_%s%d_%s", len(s.Class), s.Class, len(s.Name), s.Name, len(s.Service), s.Service)
}

// ValidNotify reports whether s can name a conversation's bare OLDs: a
// literal subject of at least two tokens (so never a conversation id,
// which has no dot), no wildcard, no white space, at most 255 bytes, whose
// last token has at least MinNotifySecret characters. That token is the
// conversation's secret, as its id is: a replica cannot tell random bits
// from others, but it can refuse a subject too short to hold 128 of them.
func ValidNotify(s string) bool {
	if len(s) > 255 || !strings.Contains(s, ".") {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	if len(s)-strings.LastIndexByte(s, '.')-1 < MinNotifySecret {
		return false
	}
	return !strings.ContainsAny(s, " \t\r\n")
}

// MinNotifySecret is the shortest last token of a Muster-Notify subject
// that names bare OLDs: 22 characters, 128 bits in base64.
const MinNotifySecret = 22
