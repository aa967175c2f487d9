package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Supported reports whether this OS can run replicas.
const Supported = true

// Start starts the replica described by spec in a new process group.
// Start owns spec.Log from the start: it is closed on failure too, and
// spec.TempDir is removed.
func Start(spec Spec) (_ *Proc, retErr error) {
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
		return nil, fmt.Errorf("%w: %q", ErrPath, spec.Path)
	}
	if spec.TempDir != "" {
		if err := os.MkdirAll(spec.TempDir, 0o700); err != nil {
			return nil, fmt.Errorf("attach: replica %s: temp dir: %w", spec.ID, err)
		}
	}
	for name, b := range spec.Files {
		if spec.TempDir == "" || name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
			return nil, fmt.Errorf("attach: replica %s: file %q: not a plain name in a temp dir", spec.ID, name)
		}
		if err := os.WriteFile(filepath.Join(spec.TempDir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("attach: replica %s: %w", spec.ID, err)
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
	if pw != nil {
		pw.Close() // the child has its copy
		pw = nil
	}
	pid := cmd.Process.Pid
	// The child is at worst an unreaped zombie here, so /proc/<pid> is its.
	st, err := ReadStat(pid)
	if err != nil {
		return nil, fmt.Errorf("attach: replica %s: %w", spec.ID, err)
	}
	p := &Proc{
		spec:  spec,
		cmd:   cmd,
		ident: Ident{PID: pid, StartTicks: st.StartTicks, BootID: bootID()},
		out:   pr,
		done:  make(chan struct{}),
	}
	if pr != nil {
		p.copied = make(chan struct{})
		go p.copyOutput()
	}
	go p.wait()
	return p, nil
}

// Signal sends sig to the replica's whole process group. After the replica
// has been reaped it returns ErrDone and signals nothing.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return ErrDone
	}
	if err := syscall.Kill(-p.ident.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("attach: replica %s: signal %v: %w", p.spec.ID, sig, err)
	}
	return nil
}

// SignalLeader sends sig to the replica's own process only (not the rest
// of its group: a shell wrapper or a sidecar may die of a signal the
// replica handles), after running before, if given, under the same lock:
// nothing it writes can race the temp dir's removal after the reap. After
// the replica has been reaped it returns ErrDone and does neither. (Until
// it is reaped, its PID cannot be reused.)
func (p *Proc) SignalLeader(sig syscall.Signal, before func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return ErrDone
	}
	if before != nil {
		if err := before(); err != nil {
			return err
		}
	}
	if err := syscall.Kill(p.ident.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("attach: replica %s: signal %v: %w", p.spec.ID, sig, err)
	}
	return nil
}

// copyOutput copies the replica's output into Log until every writer of the
// pipe is gone (or wait closes the pipe). A failing Log does not stop the
// draining, so the replica never blocks on a full pipe. It is owned by the
// Proc; wait waits for it.
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

// wait is the one goroutine that waits for the replica. It ends when the
// replica has exited; every step after that is bounded by reapTimeout.
func (p *Proc) wait() {
	var errs []error
	pid := p.ident.PID
	// Learn that the leader exited without reaping it: while it is a zombie
	// its pid, and so the group id, cannot be reused, and killing -pid is
	// safe.
	werr := waitExitedNoReap(pid)
	p.mu.Lock()
	if werr != nil {
		errs = append(errs, fmt.Errorf("attach: waitid: %w", werr))
	} else if err := signalGroup(pid, syscall.SIGKILL); err != nil && !isGone(err) {
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
		if err := signalGroup(pid, syscall.SIGKILL); err != nil && !isGone(err) {
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
	if !waitGroupGone(pid, ctx.Done()) {
		errs = append(errs, fmt.Errorf("%w: pgid %d", ErrGroupSurvived, pid))
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
