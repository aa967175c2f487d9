package attach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/shirou/gopsutil/v3/process"
	"golang.org/x/sys/unix"
)

var (
	// ErrProcDone is returned by Proc.Signal once the replica has exited and
	// been reaped: its process group id may belong to someone else by now.
	ErrProcDone = errors.New("attach: process has exited")
	// ErrProcRunning is the Err of the ExitStatus that Proc.Exit returns
	// before Done is closed.
	ErrProcRunning = errors.New("attach: process still running")
	// ErrProcPath means ProcSpec.Path is not an absolute path.
	ErrProcPath = errors.New("attach: program path must be absolute")
	// ErrGroupSurvived means members of a process group were still alive
	// after SIGKILL and a bounded wait (for example a process in
	// uninterruptible sleep).
	ErrGroupSurvived = errors.New("attach: process group still alive after SIGKILL")
)

// reapTimeout bounds how long a Proc, once its leader has exited and the
// group has been sent SIGKILL, waits for the output pipe to drain and the
// group to disappear before it gives up, closes the pipe and reports.
const reapTimeout = 5 * time.Second

// ProcSpec describes one replica process. Everything in it comes from local
// config and the manager itself, never from a message.
type ProcSpec struct {
	ID      string         // replica id (for logs)
	Path    string         // program path (absolute)
	Args    []string       // arguments, without the program name
	Env     []string       // the complete environment, KEY=VALUE; nil means empty, never inherited
	Dir     string         // working directory ("" = TempDir)
	TempDir string         // created 0700 before start (parents too), removed after the process group is gone
	Log     io.WriteCloser // receives stdout and stderr, closed after exit; nil = discard
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

// Proc is a handle on one running replica. The replica leads its own process
// group; exactly one goroutine owned by the Proc waits for it and, once it
// has exited, kills whatever is left of its group.
type Proc struct {
	spec     ProcSpec
	cmd      *exec.Cmd
	pid      int // also the process group id
	start    time.Time
	createMS int64

	out    *os.File      // read end of the output pipe; nil when Log is nil
	copied chan struct{} // closed when the copy goroutine is done; nil when Log is nil
	done   chan struct{}
	exit   ExitStatus // written before done is closed

	mu     sync.Mutex
	reaped bool // the leader has been reaped: never signal -pid again
}

// StartProc starts the replica described by spec in a new process group.
// StartProc owns spec.Log from the start: it is closed on failure too, and
// spec.TempDir is removed.
func StartProc(spec ProcSpec) (_ *Proc, retErr error) {
	var (
		cmd     *exec.Cmd
		started bool
		pr, pw  *os.File
	)
	defer func() {
		if retErr == nil {
			return
		}
		if pw != nil {
			pw.Close()
		}
		if pr != nil {
			pr.Close()
		}
		if started {
			// The leader is not reaped yet, so its pid cannot have been reused.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
		if spec.TempDir != "" {
			_ = os.RemoveAll(spec.TempDir)
		}
		if spec.Log != nil {
			_ = spec.Log.Close()
		}
	}()

	if !filepath.IsAbs(spec.Path) {
		return nil, fmt.Errorf("%w: %q", ErrProcPath, spec.Path)
	}
	if spec.TempDir != "" {
		if err := os.MkdirAll(spec.TempDir, 0o700); err != nil {
			return nil, fmt.Errorf("attach: replica %s: temp dir: %w", spec.ID, err)
		}
	}
	dir := spec.Dir
	if dir == "" {
		dir = spec.TempDir
	}
	cmd = &exec.Cmd{
		Path:        spec.Path,
		Args:        append([]string{spec.Path}, spec.Args...),
		Env:         append([]string{}, spec.Env...), // non-nil: never inherit ours
		Dir:         dir,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if spec.Log != nil {
		// Our own pipe rather than exec's: cmd.Wait must not wait for EOF,
		// which a surviving grandchild could hold off for ever.
		var err error
		if pr, pw, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("attach: replica %s: pipe: %w", spec.ID, err)
		}
		cmd.Stdout, cmd.Stderr = pw, pw
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("attach: replica %s: start: %w", spec.ID, err)
	}
	started = true
	startTime := time.Now()
	if pw != nil {
		pw.Close() // the child has its copy
		pw = nil
	}
	pid := cmd.Process.Pid
	// The child is at worst an unreaped zombie here, so /proc/<pid> is its.
	gp, err := process.NewProcess(int32(pid))
	if err != nil {
		return nil, fmt.Errorf("attach: replica %s: pid %d: %w", spec.ID, pid, err)
	}
	createMS, err := gp.CreateTime()
	if err != nil {
		return nil, fmt.Errorf("attach: replica %s: create time of pid %d: %w", spec.ID, pid, err)
	}

	p := &Proc{
		spec:     spec,
		cmd:      cmd,
		pid:      pid,
		start:    startTime,
		createMS: createMS,
		out:      pr,
		done:     make(chan struct{}),
	}
	if pr != nil {
		p.copied = make(chan struct{})
		go p.copyOutput()
	}
	go p.wait()
	return p, nil
}

// PID is the replica's process id, which is also its process group id.
func (p *Proc) PID() int { return p.pid }

// StartTime is when the replica was started.
func (p *Proc) StartTime() time.Time { return p.start }

// CreateTimeMS is the OS's create time of the process in milliseconds, as
// gopsutil reports it, read right after start. Together with the PID it
// recognises this exact process after a manager restart (see CleanOrphans).
// On Linux it has whole-second precision: it is a multiple of 1000.
func (p *Proc) CreateTimeMS() int64 { return p.createMS }

// Done is closed once the replica has exited, the rest of its group has been
// killed, its output has been copied, Log closed and TempDir removed.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exit is how the replica ended. Before Done is closed it returns a status
// whose Err is ErrProcRunning.
func (p *Proc) Exit() ExitStatus {
	select {
	case <-p.done:
		return p.exit
	default:
		return ExitStatus{Code: -1, Err: ErrProcRunning}
	}
}

// Signal sends sig to the replica's whole process group. After the replica
// has been reaped it returns ErrProcDone and signals nothing.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return ErrProcDone
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("attach: replica %s: signal %v: %w", p.spec.ID, sig, err)
	}
	return nil
}

// Stop sends SIGTERM to the replica's group, waits up to grace for it to
// exit, then sends SIGKILL to the group, and returns once Done is closed.
// It is idempotent and safe to call concurrently.
func (p *Proc) Stop(grace time.Duration) ExitStatus {
	select {
	case <-p.done:
		return p.exit
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exit
	case <-t.C:
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done // the leader cannot ignore SIGKILL; wait's own steps are bounded
	return p.exit
}

// copyOutput copies the replica's output into Log until every writer of the
// pipe is gone (or wait closes the pipe). A failing Log does not stop the
// draining, so the replica never blocks on a full pipe.
func (p *Proc) copyOutput() {
	defer close(p.copied)
	defer p.out.Close()
	w := p.spec.Log
	buf := make([]byte, 32*1024)
	for {
		n, err := p.out.Read(buf)
		if n > 0 && w != nil {
			if _, werr := w.Write(buf[:n]); werr != nil {
				w = nil // keep draining, drop the rest
			}
		}
		if err != nil {
			return
		}
	}
}

// wait is the one goroutine that waits for the replica.
func (p *Proc) wait() {
	var errs []error
	// Learn that the leader exited without reaping it: while it is a zombie
	// its pid, and so the group id, cannot be reused, and killing -pid is
	// safe.
	werr := waitExitedNoReap(p.pid)
	p.mu.Lock()
	if werr != nil {
		errs = append(errs, fmt.Errorf("attach: waitid: %w", werr))
	} else if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		errs = append(errs, fmt.Errorf("attach: kill group: %w", err))
	}
	p.reaped = true
	p.mu.Unlock()

	st := ExitStatus{Code: -1}
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		errs = append(errs, fmt.Errorf("attach: wait: %w", err))
	}
	if ps := p.cmd.ProcessState; ps != nil {
		st.Code = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Signal = ws.Signal().String()
		}
	}
	if werr != nil {
		// Reaped without the safe window; the group may still hold members.
		if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("attach: kill group: %w", err))
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), reapTimeout)
	defer cancel()
	if p.copied != nil {
		select {
		case <-p.copied:
		case <-ctx.Done():
			// Something outside the group holds the pipe open.
			p.out.Close()
			<-p.copied
			errs = append(errs, errors.New("attach: output pipe still open after exit; closed it"))
		}
	}
	if !waitGroupGone(p.pid, ctx.Done()) {
		errs = append(errs, fmt.Errorf("%w: pgid %d", ErrGroupSurvived, p.pid))
	}
	if p.spec.Log != nil {
		if err := p.spec.Log.Close(); err != nil {
			errs = append(errs, fmt.Errorf("attach: close log: %w", err))
		}
	}
	if p.spec.TempDir != "" {
		if err := os.RemoveAll(p.spec.TempDir); err != nil {
			errs = append(errs, fmt.Errorf("attach: remove temp dir: %w", err))
		}
	}
	st.Err = errors.Join(errs...)
	p.exit = st
	close(p.done)
}

// waitExitedNoReap blocks until the child pid has exited, leaving it
// waitable (a zombie).
func waitExitedNoReap(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// waitGroupGone polls until no live (non-zombie) process is left in process
// group pgid, or stop is closed. It reports whether the group is gone.
func waitGroupGone(pgid int, stop <-chan struct{}) bool {
	step := time.Millisecond
	for {
		if !groupAlive(pgid) {
			return true
		}
		t := time.NewTimer(step)
		select {
		case <-stop:
			t.Stop()
			return !groupAlive(pgid)
		case <-t.C:
		}
		step = min(2*step, 50*time.Millisecond)
	}
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. Zombies count as gone: they hold no resources we care about, and
// whoever inherited them may never reap them.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true // no /proc: trust kill
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if st.PGRP == pgid && st.State != 'Z' && st.State != 'X' {
			return true
		}
	}
	return false
}

// procStat is the part of /proc/<pid>/stat that we use.
type procStat struct {
	State      byte
	PPID       int
	PGRP       int
	StartTicks uint64 // start time in clock ticks after boot: exact and stable
}

// readProcStat reads /proc/<pid>/stat.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime …; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("attach: malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("attach: malformed /proc/%d/stat", pid)
	}
	st := procStat{State: f[0][0]}
	if st.PPID, err = strconv.Atoi(string(f[1])); err != nil {
		return procStat{}, fmt.Errorf("attach: /proc/%d/stat ppid: %w", pid, err)
	}
	if st.PGRP, err = strconv.Atoi(string(f[2])); err != nil {
		return procStat{}, fmt.Errorf("attach: /proc/%d/stat pgrp: %w", pid, err)
	}
	if st.StartTicks, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("attach: /proc/%d/stat starttime: %w", pid, err)
	}
	return st, nil
}
