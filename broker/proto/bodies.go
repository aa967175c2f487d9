package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// NotificationVersion is the current version of Notification.
const NotificationVersion = 1

// Notification is the attach notification (EntireX's ETB_ATMCB), sent by a
// broker as JSON on NotifySubject when work for a service waits and no
// replica is free or starting.
type Notification struct {
	Version  int    `json:"version"`
	Service  string `json:"service"`  // CLASS/NAME/SERVICE
	Missing  int    `json:"missing"`  // replicas wanted: requests not scheduled at once since the last notification
	Replicas int    `json:"replicas"` // registered replicas, not counting quiescing ones
	Pending  int    `json:"pending"`  // requests waiting in the queue
	Active   int    `json:"active"`   // active conversations (calls in progress included)
	Broker   string `json:"broker"`   // id of the broker that sent it
	Target   string `json:"target"`   // attach manager chosen to act ("" when none offers the service)
	Time     int64  `json:"time"`     // Unix ms
	// Lease is the leading broker's epoch (the revision of the lease in
	// LeaseBucket at which it took the lead); 0 from a broker that does
	// not hold the lease (it could not read it). An attach manager drops a
	// notification whose Lease is below the highest it has seen.
	Lease uint64 `json:"lease,omitempty"`
	// Placement names the scheme that chose Target and why (for
	// operators: `muster service show`).
	Placement string `json:"placement,omitempty"`
}

// LeaseBucket is the KV bucket of the brokers' leadership lease (key
// "lead": {"broker","host"}).
const LeaseBucket = "muster_lead"

// BrokerHintPrefix + CLASS.NAME.SERVICE: a broker that does not lead tells
// the leader it queued a request of the service (empty body).
const BrokerHintPrefix = "muster.broker.hint."

// ErrBadBody is wrapped by body decode errors.
var ErrBadBody = errors.New("proto: bad body")

// DecodeNotification decodes and validates a Notification.
func DecodeNotification(b []byte) (Notification, error) {
	var n Notification
	if err := decodeBody(b, &n); err != nil {
		return n, err
	}
	if n.Version < 1 {
		return n, fmt.Errorf("%w: notification version %d", ErrBadBody, n.Version)
	}
	if _, err := ParseService(n.Service); err != nil {
		return n, fmt.Errorf("%w: notification: %w", ErrBadBody, err)
	}
	if n.Missing < 0 || n.Replicas < 0 || n.Pending < 0 || n.Active < 0 {
		return n, fmt.Errorf("%w: notification has a negative count", ErrBadBody)
	}
	return n, nil
}

// Replica states.
const (
	StateReady     = "ready"
	StateQuiescing = "quiescing"
	// StateStandby: started, connected and parked on StandbySubject, not
	// serving; it counts in no figure until it takes work (it is then
	// "ready").
	StateStandby = "standby"

	// A parked standby's arming (ReplicaInfo.Arm).
	ArmOn  = "on"
	ArmOff = "off"
)

// ReplicaInfo is a replica's registration, kept in ReplicaBucket under its
// id and rewritten at every heartbeat (and soon after conversations end).
// A record older than three heartbeats (HeartbeatMS × 3) means the replica
// is gone.
type ReplicaInfo struct {
	ID          string `json:"id"`
	Service     string `json:"service"`
	Host        string `json:"host"`
	PID         int    `json:"pid"`
	Version     string `json:"version"`
	State       string `json:"state"`
	Capacity    int    `json:"capacity"`     // concurrent conversations it takes
	Active      int    `json:"active"`       // conversations open now
	Started     int64  `json:"started"`      // Unix ms
	HeartbeatMS int64  `json:"heartbeat_ms"` // interval between records
	Updated     int64  `json:"updated"`      // Unix ms of this record
	Stats       Stats  `json:"stats"`
	// Attach is the id of the attach manager that started it (from
	// MUSTER_ATTACH_ID; "" when started by hand).
	Attach string `json:"attach,omitempty"`
	// Arm is set by a parked standby that its attach manager may arm
	// (MUSTER_STANDBY_ARM and SIGUSR2; PROTOCOL §6.13): ArmOn while it
	// takes the warm subject too, ArmOff while not. Empty: it cannot be
	// armed (SIGUSR2's default action would end it), so its manager never
	// signals it.
	Arm string `json:"arm,omitempty"`
	// LastActive is when it last received a message (Unix ms, to within
	// a quarter second; 0: never).
	LastActive int64 `json:"last_active,omitempty"`
	// Convs are its open calls and conversations, at most MaxConvInfos
	// (ConvsOmitted counts the rest).
	Convs        []ConvInfo `json:"convs,omitempty"`
	ConvsOmitted int        `json:"convs_omitted,omitempty"`
}

// MaxConvInfos bounds ReplicaInfo.Convs, so a record stays small.
const MaxConvInfos = 32

// ConvInfo is one open call or conversation of a replica, for operators.
// It names no conversation id: that is the conversation's capability.
type ConvInfo struct {
	Client   string `json:"client"`   // the caller: ClientOfInbox of its reply subject
	Call     bool   `json:"call"`     // a call, not a conversation
	Queued   bool   `json:"queued"`   // it came through the broker's queue
	Started  int64  `json:"started"`  // Unix ms
	Messages int    `json:"messages"` // messages received in it so far
}

// ClientOfInbox names the client behind a reply subject: the user name of
// an inbox `_INBOX.<user>.<id>.<token>` (Muster's permissions make each
// user use its own, §12), else the connection's inbox id of a plain
// `_INBOX.<id>.<token>`; "" for anything else.
func ClientOfInbox(subject string) string {
	rest, ok := strings.CutPrefix(subject, "_INBOX.")
	if !ok {
		return ""
	}
	tok, _, _ := strings.Cut(rest, ".")
	return tok
}

// Stats are a replica's counters since it started.
type Stats struct {
	Conversations int64 `json:"conversations"` // calls + conversations taken
	Messages      int64 `json:"messages"`      // messages received (events)
	Errors        int64 `json:"errors"`
	BytesIn       int64 `json:"bytes_in"`
	BytesOut      int64 `json:"bytes_out"`
	ProcessingNS  int64 `json:"processing_ns"` // total handler time
	Queued        int64 `json:"queued"`        // requests taken from the durable queue
}

// DecodeReplicaInfo decodes and validates a ReplicaInfo.
func DecodeReplicaInfo(b []byte) (ReplicaInfo, error) {
	var r ReplicaInfo
	if err := decodeBody(b, &r); err != nil {
		return r, err
	}
	if err := ValidID(r.ID); err != nil {
		return r, fmt.Errorf("%w: replica: %w", ErrBadBody, err)
	}
	if _, err := ParseService(r.Service); err != nil {
		return r, fmt.Errorf("%w: replica: %w", ErrBadBody, err)
	}
	if r.Capacity < 1 || r.Active < 0 || r.HeartbeatMS <= 0 || r.HeartbeatMS > maxHeartbeatMS {
		return r, fmt.Errorf("%w: replica %s: capacity %d, active %d, heartbeat %dms", ErrBadBody, r.ID, r.Capacity, r.Active, r.HeartbeatMS)
	}
	return r, nil
}

// maxHeartbeatMS caps heartbeat intervals at a day, so three of them never
// overflow a time.Duration.
const maxHeartbeatMS = 24 * 3600 * 1000

// expired reports whether a record written at updated (Unix ms) with the
// given heartbeat is older than three heartbeats at now.
func expired(updated, heartbeatMS int64, now time.Time) bool {
	heartbeatMS = min(max(heartbeatMS, 0), maxHeartbeatMS)
	return now.Sub(time.UnixMilli(updated)) > 3*time.Duration(heartbeatMS)*time.Millisecond
}

// Expired reports whether the record is older than three heartbeats at now.
func (r ReplicaInfo) Expired(now time.Time) bool { return expired(r.Updated, r.HeartbeatMS, now) }

// ServiceStats are the broker's figures for one service: the ATMCB counts
// plus EntireX's monitoring counters.
type ServiceStats struct {
	Service        string `json:"service"`
	Replicas       int    `json:"replicas"`
	Quiescing      int    `json:"quiescing"`
	Standby        int    `json:"standby"` // standby replicas: started, parked, counted in no other figure
	Capacity       int    `json:"capacity"`
	Active         int    `json:"active"`
	ActiveHigh     int    `json:"active_high"`
	Pending        int    `json:"pending"`
	PendingHigh    int    `json:"pending_high"`
	Missing        int    `json:"missing"`
	TotalRequests  int64  `json:"total_requests"` // requests the broker queued (a service's total adds its replicas' warm requests: Stats.Warm)
	ServerOccupied int64  `json:"server_occupied"`
	Failed         int64  `json:"failed"` // queued requests answered 0900/0004 (service failing)
	Notifications  int64  `json:"notifications"`
	LastNotifiedMS int64  `json:"last_notified"`
	Placement      string `json:"placement,omitempty"` // the scheme that places its replicas
}

// BrokerStats answers BrokerStatsSubject.
type BrokerStats struct {
	Broker   string         `json:"broker"`
	Host     string         `json:"host,omitempty"`
	Version  string         `json:"version,omitempty"`
	Started  int64          `json:"started,omitempty"` // Unix ms
	Services []ServiceStats `json:"services"`
}

// decodeBody decodes the JSON body b into v. It is lenient on purpose, as
// docs/PROTOCOL.md §9 asks of every reader: unknown fields are ignored (a
// newer writer may add some) and missing fields stay zero; the Decode*
// functions then validate what they rely on. What is not a single JSON
// value of the right types (trailing data included) fails, wrapping
// ErrBadBody.
func decodeBody(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadBody, err)
	}
	return nil
}

// AttachBucket is the key-value bucket of attach manager registrations
// (AttachInfo, JSON), keyed by attach manager id.
const AttachBucket = "muster_attach"

// AttachInfo is an attach manager's registration (EntireX: REGISTER
// OPTION=ATTACH for each service it can start), rewritten every heartbeat.
type AttachInfo struct {
	ID          string   `json:"id"`
	Host        string   `json:"host"`
	Version     string   `json:"version"`
	Services    []string `json:"services"` // CLASS/NAME/SERVICE it can start
	Isolated    bool     `json:"isolated"` // maintenance: starts nothing
	HeartbeatMS int64    `json:"heartbeat_ms"`
	Updated     int64    `json:"updated"` // Unix ms
	Started     int64    `json:"started"` // Unix ms

	// Failing maps a service to why its replicas cannot start (they crash
	// before registering, or do not register within the start timeout).
	// While every attach manager offering a service reports it failing and
	// no replica of it runs, brokers answer its callers 0900/0004 with the
	// reason instead of letting them wait.
	Failing map[string]string `json:"failing,omitempty"`
	// Standby maps a service to its standby replicas parked on this host
	// (PROTOCOL §6.13): placement prefers such a host, whose manager
	// activates one instead of starting a process. Omitted when empty.
	Standby map[string]int `json:"standby,omitempty"`

	// Host figures, for placement and for operators.
	Replicas    int     `json:"replicas"`     // replica processes running or starting
	Starting    int     `json:"starting"`     // of which not yet registered
	MaxReplicas int     `json:"max_replicas"` // the host's limit
	CPUPercent  float64 `json:"cpu_percent"`
	Load1       float64 `json:"load1"`
	MemFree     uint64  `json:"mem_free"` // bytes available
	MemTotal    uint64  `json:"mem_total"`

	// Users are the open calls and conversations of its replicas, and
	// MaxUsers how many it allows (host.max_users); EventsPerSec and
	// BytesPerSec (in + out) its replicas' traffic over the last heartbeat.
	Users        int     `json:"users"`
	MaxUsers     int     `json:"max_users"`
	EventsPerSec float64 `json:"events_per_sec"`
	BytesPerSec  float64 `json:"bytes_per_sec"`
	// LogDir is where its replicas' logs are (LogDir/C_N_S/<id>.log), and
	// LogFile its own log; both are served on AttachLogsSubject.
	LogDir  string `json:"log_dir,omitempty"`
	LogFile string `json:"log_file,omitempty"`
	// Procs are its replica processes' CPU and memory, sampled each
	// heartbeat.
	Procs []ProcInfo `json:"procs,omitempty"`
	// Retired are the final counters of its replicas that exited, per
	// service, since it started: with the live replicas' they make a
	// service's totals.
	Retired map[string]Stats `json:"retired,omitempty"`
}

// ProcInfo is one replica process as its attach manager sees it.
type ProcInfo struct {
	ID         string  `json:"id"`
	Service    string  `json:"service"`
	Placement  string  `json:"placement,omitempty"` // why it was started here: the broker's placement reason, or "min", "restart", "probe"
	PID        int     `json:"pid"`
	Started    int64   `json:"started"`     // Unix ms (spawned)
	CPUPercent float64 `json:"cpu_percent"` // over the last heartbeat; 100 = one core
	RSS        uint64  `json:"rss"`         // resident memory, bytes
}

// Add adds o's counters to s.
func (s *Stats) Add(o Stats) {
	s.Conversations += o.Conversations
	s.Messages += o.Messages
	s.Errors += o.Errors
	s.BytesIn += o.BytesIn
	s.BytesOut += o.BytesOut
	s.ProcessingNS += o.ProcessingNS
	s.Queued += o.Queued
}

// Warm is how many requests it took straight from its warm subject, not
// through the queue.
func (s Stats) Warm() int64 { return s.Conversations - s.Queued }

// DecodeAttachInfo decodes and validates an AttachInfo.
func DecodeAttachInfo(b []byte) (AttachInfo, error) {
	var a AttachInfo
	if err := decodeBody(b, &a); err != nil {
		return a, err
	}
	if err := ValidID(a.ID); err != nil {
		return a, fmt.Errorf("%w: attach manager: %w", ErrBadBody, err)
	}
	for _, s := range a.Services {
		if _, err := ParseService(s); err != nil {
			return a, fmt.Errorf("%w: attach manager %s: %w", ErrBadBody, a.ID, err)
		}
	}
	if a.HeartbeatMS <= 0 || a.HeartbeatMS > maxHeartbeatMS {
		return a, fmt.Errorf("%w: attach manager %s: heartbeat %dms", ErrBadBody, a.ID, a.HeartbeatMS)
	}
	if a.Users < 0 || a.MaxUsers < 0 || a.EventsPerSec < 0 || a.BytesPerSec < 0 {
		return a, fmt.Errorf("%w: attach manager %s: negative figures", ErrBadBody, a.ID)
	}
	if a.Replicas < 0 || a.Starting < 0 || a.MaxReplicas < 0 || a.Starting > a.Replicas {
		return a, fmt.Errorf("%w: attach manager %s: replicas %d, starting %d, max_replicas %d", ErrBadBody, a.ID, a.Replicas, a.Starting, a.MaxReplicas)
	}
	return a, nil
}

// Expired reports whether the record is older than three heartbeats at now.
func (a AttachInfo) Expired(now time.Time) bool { return expired(a.Updated, a.HeartbeatMS, now) }

// Offers reports whether the attach manager can start svc.
func (a AttachInfo) Offers(svc string) bool {
	for _, s := range a.Services {
		if s == svc {
			return true
		}
	}
	return false
}
