package proto

// AttachResetPrefix + CLASS.NAME.SERVICE asks every attach manager that
// offers the service to forget that it is failing and to start one probe
// replica now (`muster service reset`). Every attach manager subscribes to
// AttachResetPrefix + ">" (no queue group); each one that offers the
// service answers with an AttachReset (JSON), the others stay silent.
const AttachResetPrefix = "muster.attach.reset."

// AttachResetSubject returns the reset subject of s.
func AttachResetSubject(s Service) string { return AttachResetPrefix + s.Tokens() }

// AttachReset is an attach manager's answer on AttachResetSubject.
type AttachReset struct {
	Attach     string `json:"attach"`                // the attach manager's id
	Service    string `json:"service"`               // CLASS/NAME/SERVICE
	WasFailing string `json:"was_failing,omitempty"` // why it was failing ("" if it was not)
	Probe      bool   `json:"probe"`                 // a probe replica was started (false: one was already starting or running, or at a limit)
}

// AttachControlPrefix + id is an attach manager's control subject: a
// request with Muster-Op ISOLATE or RESTORE (admins only). ISOLATE: the
// host starts no new replicas and its running ones quiesce (SIGTERM: they
// finish their conversations within their grace period); RESTORE ends
// that. The state survives a restart of the manager. The answer is the
// manager's AttachInfo after the change, or an error reply.
const AttachControlPrefix = "muster.attach.ctl."

// Attach control operations (Muster-Op).
const (
	OpIsolate = "ISOLATE"
	OpRestore = "RESTORE"
)

// AttachControlSubject returns the control subject of attach manager id.
func AttachControlSubject(id string) string { return AttachControlPrefix + id }

// AttachLogsPrefix + id serves the logs of attach manager id: a request
// whose body is a LogRequest, answered with the bytes asked for (at most
// the server's max payload less 1 KiB) and the headers HdrLogOffset,
// HdrLogSize and HdrLogFile; or an error reply (0002/0002: no such
// replica log on this host).
const AttachLogsPrefix = "muster.attach.logs."

// AttachLogsSubject returns the logs subject of attach manager id.
func AttachLogsSubject(id string) string { return AttachLogsPrefix + id }

// LogRequest asks for part of a log: the manager's own (Replica "") or
// that of one of its replicas, running or exited, from Offset (bytes;
// negative: that many bytes before the end), at most Max bytes (0: as much
// as fits).
type LogRequest struct {
	Replica string `json:"replica,omitempty"`
	Offset  int64  `json:"offset"`
	Max     int    `json:"max,omitempty"`
}

// Headers of a log chunk.
const (
	HdrLogOffset = "Muster-Log-Offset" // where the chunk starts in the file (decimal bytes)
	HdrLogSize   = "Muster-Log-Size"   // the file's size when read (decimal bytes)
	HdrLogFile   = "Muster-Log-File"   // the file's path on the host
)
