// Package proc runs and stops the attach manager's replica processes: each
// replica leads its own process group, exactly one goroutine per process
// waits for it, and stopping is one routine (SIGTERM, a grace period, then
// SIGKILL to the whole group) for a replica of this run and for an orphan of
// an earlier one alike.
//
// Process handling needs Linux (waitid with WNOWAIT, /proc); elsewhere
// Start returns ErrUnsupported.
package proc

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// reapTimeout bounds each wait that follows a SIGKILL: for the output pipe
// to drain and the group to disappear once the leader has exited, and for a
// killed process or group to go.
const reapTimeout = 5 * time.Second

// Spec describes one replica process. Everything in it comes from local
// config and the manager itself, never from a message.
type Spec struct {
	ID      string            // replica id (for errors)
	Path    string            // program path (absolute)
	Args    []string          // arguments, without the program name
	Env     []string          // the complete environment, KEY=VALUE; nil means empty, never inherited
	Dir     string            // working directory ("" = TempDir)
	TempDir string            // created 0700 before start (parents too), removed after the process group is gone
	Files   map[string][]byte // written into TempDir (mode 0600) before start: name -> content (names without '/')
	Log     io.WriteCloser    // receives stdout and stderr, closed after exit; nil = discard
}

// ExitStatus is how a replica ended.
type ExitStatus struct {
	Code   int    // exit code; -1 when killed by a signal
	Signal string // the signal that killed it ("killed", "terminated"), if any
	Err    error  // anything that went wrong around the exit: wait, log, temp dir, surviving group
}

// String reports the status like "exit 3" or "signal killed".
func (s ExitStatus) String() string {
	var b string
	switch {
	case s.Signal != "":
		b = "signal " + s.Signal
	case s.Code < 0:
		b = "unknown"
	default:
		b = "exit " + strconv.Itoa(s.Code)
	}
	if s.Err != nil {
		b += " (" + s.Err.Error() + ")"
	}
	return b
}

// Ident names one exact process across restarts of the manager: its PID,
// its start time in clock ticks after boot (field 22 of /proc/PID/stat,
// exact and never rewritten) and the boot it belongs to. A PID that was
// reused has other start ticks, even within the same second.
type Ident struct {
	PID        int
	StartTicks uint64
	BootID     string // /proc/sys/kernel/random/boot_id ("" if unreadable)
}

// Proc is a handle on one running replica. The replica leads its own process
// group; exactly one goroutine owned by the Proc waits for it and, once it
// has exited, kills whatever is left of its group.
type Proc struct {
	spec  Spec
	cmd   *exec.Cmd
	ident Ident // ident.PID is also the process group id

	out    *os.File      // read end of the output pipe; nil when Log is nil
	copied chan struct{} // closed when the copy goroutine is done; nil when Log is nil
	done   chan struct{}
	exit   ExitStatus // written before done is closed

	mu     sync.Mutex
	reaped bool // the leader has been reaped: never signal -pid again
}

// PID is the replica's process id, which is also its process group id.
func (p *Proc) PID() int { return p.ident.PID }

// Ident identifies the process exactly, for a later run of the manager (see
// Ident.Check).
func (p *Proc) Ident() Ident { return p.ident }

// Done is closed once the replica has exited, the rest of its group has been
// killed, its output has been copied, Log closed and TempDir removed.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exit is how the replica ended. Before Done is closed it returns a status
// whose Err is ErrRunning.
func (p *Proc) Exit() ExitStatus {
	select {
	case <-p.done:
		return p.exit
	default:
		return ExitStatus{Code: -1, Err: ErrRunning}
	}
}
