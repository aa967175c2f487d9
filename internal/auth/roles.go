package auth

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/musterhq/muster/broker/proto"
)

// Role is one kind of Muster participant; each has its least NATS
// permissions (Table).
type Role string

const (
	RoleClient  Role = "client"  // calls and conversations, its own inbox only
	RoleReplica Role = "replica" // serves one service (or, unscoped, any)
	RoleAttach  Role = "attach"  // an attach manager
	RoleBroker  Role = "broker"  // a broker
	RoleAdmin   Role = "admin"   // operator tools: the whole account
)

// Roles lists every role, in the order of the docs.
var Roles = []Role{RoleClient, RoleReplica, RoleAttach, RoleBroker, RoleAdmin}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return "", fmt.Errorf("auth: unknown role %q (want one of %s)", s, strings.Join(names, ", "))
}

// Grant is one subject a role may publish or subscribe to, and why. A
// subscribe grant "subject queue" allows only that queue group.
type Grant struct {
	Subject string
	Why     string
}

// Perms is a role's permissions, as templates: Render fills in the
// placeholders of a Scope.
type Perms struct {
	Pub, Sub []Grant
	// Responses, when > 0, lets the user answer that many messages to the
	// reply subject of each request it received (NATS allow_responses),
	// whatever that subject is.
	Responses int
}

// Placeholders in the table's subjects.
const (
	PhInbox    = "{inbox}"    // _INBOX.<user name>: the user's inbox prefix
	PhID       = "{id}"       // the replica or attach manager id (the user name; * when unscoped)
	PhService  = "{svc}"      // CLASS.NAME.SERVICE (*.*.* when unscoped)
	PhConsumer = "{consumer}" // the service's queue consumer (* when unscoped)
)

// table is THE permission table: docs/PROTOCOL.md "Roles and permissions"
// is generated from it (TestProtocolDocTable). JetStream API subjects are
// those the code really sends: nats.go jetstream's stream info/create/
// update, consumer create (with filter subject), ordered consumers for KV
// watches and key lists, direct get for KV reads (buckets allow direct),
// the raw pull MSG.NEXT, acks and flow control.
var table = map[Role]Perms{
	RoleClient: {
		Pub: []Grant{
			{"muster.svc.>", "warm calls and NEW"},
			{"muster.new.>", "bare NEW (no headers) to a free replica"},
			{"muster.standby.>", "calls and NEW to a standby replica (after a 503 on the warm subject)"},
			{"muster.call.>", "calls through a broker; FIND of a queued request"},
			{"muster.rep.*", "OLD, EOC, CANCEL, PING to the replica of a conversation"},
			{"muster.held.>", "FIND and CANCEL of a request held by a replica"},
		},
		Sub: []Grant{
			{PhInbox + ".>", "replies, statuses and conversation events: its own inbox only"},
		},
	},
	RoleReplica: {
		Pub: []Grant{
			{"_INBOX.>", "replies to callers (reply subject, Muster-Reply, Muster-Notify) and discovery requesters"},
			{"muster.fwd." + PhService, "hands a warm request it cannot serve to the brokers"},
			{"$JS.API.CONSUMER.MSG.NEXT.MUSTER_QUEUE." + PhConsumer, "pulls one queued request"},
			{"$JS.ACK.MUSTER_QUEUE." + PhConsumer + ".>", "acks a pulled request"},
			{"$JS.API.CONSUMER.CREATE.MUSTER_QUEUE." + PhConsumer + ".muster.q." + PhService, "creates or updates its service's consumer (filter subject fixed)"},
			{"$JS.API.CONSUMER.INFO.MUSTER_QUEUE." + PhConsumer, "looks its consumer up"},
			{"$JS.API.STREAM.INFO.MUSTER_QUEUE", "finds the queue stream; after an unconfirmed ack, which sequences it still holds"},
			{"$JS.API.STREAM.CREATE.MUSTER_QUEUE", "creates the queue stream when it is missing"},
			{"$JS.API.STREAM.INFO.KV_muster_replicas", "finds the replica bucket"},
			{"$JS.API.STREAM.CREATE.KV_muster_replicas", "creates the replica bucket when it is missing"},
			{"$KV.muster_replicas." + PhID, "its own registration record (put, delete)"},
			{"$JS.API.CONSUMER.CREATE.KV_muster_replicas.>", "lists the replica records (idle minimum)"},
			{"$JS.API.CONSUMER.DELETE.KV_muster_replicas.>", "ends that listing"},
			{"$JS.FC.KV_muster_replicas.>", "flow control of that listing"},
			{"$JS.API.DIRECT.GET.KV_muster_replicas.>", "reads a replica record"},
		},
		Sub: []Grant{
			{"muster.svc." + PhService + " muster", "the warm subject, in queue group muster only"},
			{"muster.new." + PhService + " muster", "bare NEWs, beside the warm subject, in queue group muster only"},
			{"muster.standby." + PhService + " muster", "the standby subject, in queue group muster only"},
			{"muster.held." + PhService, "FIND and CANCEL of held requests"},
			{"muster.rep." + PhID, "its private subject"},
			{"muster.ctl." + PhID, "its control subject (QUIESCE, IMMED)"},
			{"$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.MUSTER_QUEUE." + PhConsumer, "its consumer's new leader: pull again at once"},
			{PhInbox + ".>", "its pull inbox and request replies"},
			{"$SRV.>", "NATS micro discovery"},
		},
	},
	RoleAttach: {
		Pub: []Grant{
			{"muster.rep.*", "PINGs a replica it started (liveness)"},
			{"$KV.muster_attach." + PhID, "its own registration record"},
			{"$KV.muster_replicas.*", "deletes the record of a replica that exited (keys are flat: not scopable to its own replicas)"},
			{"$JS.API.INFO", "JetStream account info"},
			{"$JS.API.STREAM.INFO.*", "finds the queue stream and the buckets"},
			{"$JS.API.STREAM.CREATE.MUSTER_QUEUE", "creates the queue stream"},
			{"$JS.API.STREAM.UPDATE.MUSTER_QUEUE", "brings it up to date (copies, allow_msg_ttl)"},
			{"$JS.API.STREAM.CREATE.KV_muster_replicas", "creates the replica bucket"},
			{"$JS.API.STREAM.UPDATE.KV_muster_replicas", "brings it up to date"},
			{"$JS.API.STREAM.CREATE.KV_muster_attach", "creates the attach bucket"},
			{"$JS.API.STREAM.UPDATE.KV_muster_attach", "brings it up to date"},
			{"$JS.API.CONSUMER.CREATE.KV_muster_replicas.>", "watches the replica records"},
			{"$JS.API.CONSUMER.DELETE.KV_muster_replicas.>", "ends a watch"},
			{"$JS.FC.KV_muster_replicas.>", "flow control of the watch"},
			{"$JS.API.DIRECT.GET.KV_muster_replicas.>", "reads a replica record"},
			{"$JS.API.STREAM.CREATE.KV_muster_pool", "creates the host pool bucket"},
			{"$JS.API.STREAM.UPDATE.KV_muster_pool", "brings it up to date"},
			{"$KV.muster_pool.host." + PhID, "adds itself to the host pool"},
			{"$JS.API.CONSUMER.CREATE.KV_muster_pool.>", "follows the host pool (its own record's live settings)"},
			{"$JS.API.CONSUMER.DELETE.KV_muster_pool.>", "ends that watch"},
			{"$JS.FC.KV_muster_pool.>", "flow control of the watch"},
			{"$JS.API.DIRECT.GET.KV_muster_pool.>", "reads its pool record (adding itself)"},
		},
		Sub: []Grant{
			{"muster.attach.host." + PhID, "the notifications addressed to it"},
			{"muster.attach.reset.>", "reset of a failing service (admin)"},
			{"muster.attach.ctl." + PhID, "ISOLATE and RESTORE of its host (admin)"},
			{"muster.attach.logs." + PhID, "requests for its own and its replicas' logs (admin)"},
			{PhInbox + ".>", "request replies"},
		},
		Responses: 1, // answers a reset, a control or a log request to the admin's reply subject
	},
	RoleBroker: {
		Pub: []Grant{
			{"_INBOX.>", "replies and statuses to callers, acks of forwards, stats"},
			{"muster.q.>", "queues requests (JetStream publish)"},
			{"muster.attach.host.*", "notifies the attach manager it chose"},
			{"muster.attach.notify.>", "a copy of every notification for observers"},
			{"$JS.API.>", "the queue stream and consumers, buckets, KV watches and reads"},
			{"$JS.ACK.MUSTER_QUEUE.>", "drains a failing service's queue"},
			{"$JS.FC.>", "flow control of KV watches"},
			{"$KV.muster_replicas.>", "deletes stale replica records"},
			{"$KV.muster_attach.>", "deletes stale attach records"},
			{"$KV.muster_lead.>", "takes, renews and releases the leadership lease"},
			{"muster.broker.hint.>", "tells the leading broker it queued a request"},
		},
		Sub: []Grant{
			{"muster.call.> muster-broker", "calls, in queue group muster-broker only"},
			{"muster.fwd.> muster-broker", "replicas' forwards, in queue group muster-broker only"},
			{"muster.broker.stats", "stats"},
			{"muster.broker.stats.>", "stats of one service"},
			{"muster.broker.hint.>", "hints from the other brokers (the leader acts on them)"},
			{PhInbox + ".>", "request replies"},
		},
	},
	RoleAdmin: {
		Pub: []Grant{{">", "everything in the MUSTER account (muster.ctl.*, muster.attach.reset.*, muster.broker.stats, $SRV, JetStream)"}},
		Sub: []Grant{{">", "everything in the MUSTER account"}},
	},
}

// Table returns role's permission templates (a copy).
func Table(role Role) (Perms, error) {
	p, ok := table[role]
	if !ok {
		_, err := ParseRole(string(role))
		return Perms{}, err
	}
	p.Pub = append([]Grant(nil), p.Pub...)
	p.Sub = append([]Grant(nil), p.Sub...)
	return p, nil
}

// Scope narrows a role to one user: Name is the user name (replica id,
// attach manager id, broker or client name), Service the one service a
// replica serves. Empty Name means the role's name and, for ids, "*";
// empty Service means every service.
type Scope struct {
	Name    string
	Service string // CLASS/NAME/SERVICE
}

// UserName returns the JWT user name of role in s.
func (s Scope) UserName(role Role) string {
	if s.Name != "" {
		return s.Name
	}
	return string(role)
}

// InboxPrefix is the inbox prefix a user named name must connect with
// (nats.CustomInboxPrefix, natscli --inbox-prefix): `_INBOX.<name>`. Two
// tokens, so that repliers may publish to all of `_INBOX.>` while each
// user may subscribe only to its own `_INBOX.<name>.>`.
func InboxPrefix(name string) string { return proto.InboxPrefix(name) }

func (s Scope) check(role Role) error {
	if s.Name != "" {
		if err := proto.CheckToken(s.Name, proto.MaxIDLen); err != nil {
			return fmt.Errorf("auth: user name %q: %v", s.Name, err)
		}
	}
	if s.Service != "" {
		if role != RoleReplica {
			return fmt.Errorf("auth: only the replica role is scoped to a service, not %s", role)
		}
		if _, err := proto.ParseService(s.Service); err != nil {
			return fmt.Errorf("auth: service %q: %v", s.Service, err)
		}
	}
	return nil
}

// Render returns role's permissions for s, placeholders filled in.
func Render(role Role, s Scope) (Perms, error) {
	p, err := Table(role)
	if err != nil {
		return Perms{}, err
	}
	if err := s.check(role); err != nil {
		return Perms{}, err
	}
	id, svc, cons := "*", "*.*.*", "*"
	if s.Name != "" {
		id = s.Name
	}
	if s.Service != "" {
		sv, _ := proto.ParseService(s.Service)
		svc, cons = sv.Tokens(), proto.ConsumerName(sv)
	}
	r := strings.NewReplacer(PhInbox, InboxPrefix(s.UserName(role)), PhID, id, PhService, svc, PhConsumer, cons)
	for i := range p.Pub {
		p.Pub[i].Subject = r.Replace(p.Pub[i].Subject)
	}
	for i := range p.Sub {
		p.Sub[i].Subject = r.Replace(p.Sub[i].Subject)
	}
	return p, nil
}

// subjects returns the subjects of gs.
func subjects(gs []Grant) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.Subject
	}
	return out
}

// apply sets p on user claims.
func (p Perms) apply(uc *jwt.UserClaims) {
	uc.Pub.Allow.Add(subjects(p.Pub)...)
	uc.Sub.Allow.Add(subjects(p.Sub)...)
	if p.Responses > 0 {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: p.Responses}
	}
}
