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
