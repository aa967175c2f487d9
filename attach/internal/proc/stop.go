package proc

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// terminate is the one signal-grace-kill routine, for a Proc of this run
// and a process group left by an earlier one alike: SIGTERM, up to grace for
// gone (less if ctx ends first), then SIGKILL and up to reapTimeout more.
// signal sends a signal to the whole group; gone waits until the target is
// gone or stop is closed, and reports which.
func terminate(ctx context.Context, grace time.Duration, signal func(syscall.Signal) error, gone func(stop <-chan struct{}) bool) error {
	switch err := signal(syscall.SIGTERM); {
	case err == nil:
		gctx, cancel := context.WithTimeout(ctx, grace)
		ok := gone(gctx.Done())
		cancel()
		if ok {
			return nil
		}
		if err := signal(syscall.SIGKILL); err != nil && !isGone(err) {
			return err
		}
	case !isGone(err):
		return err
	}
	kctx, cancel := context.WithTimeout(context.Background(), reapTimeout)
	defer cancel()
	if !gone(kctx.Done()) {
		return ErrGroupSurvived
	}
	return nil
}

// isGone reports whether a signal found nothing left to signal.
func isGone(err error) bool {
	return errors.Is(err, ErrDone) || errors.Is(err, syscall.ESRCH)
}

// Stop sends SIGTERM to the replica's group, waits up to grace (less if ctx
// ends first) for it to exit, then sends SIGKILL to the group and waits,
// bounded, for Done. It returns Exit: a status whose Err is ErrRunning if
// the replica outlived even that (a process in uninterruptible sleep).
// Stop is idempotent and safe to call concurrently.
func (p *Proc) Stop(ctx context.Context, grace time.Duration) ExitStatus {
	select {
	case <-p.done:
		return p.exit
	default:
	}
	_ = terminate(ctx, grace, p.Signal, p.waitDone)
	return p.Exit()
}

// Kill sends SIGKILL to the replica's whole group at once (nothing after
// the replica has been reaped) and returns without waiting.
func (p *Proc) Kill() {
	_ = p.Signal(syscall.SIGKILL)
}

// waitDone waits until the replica is done or stop is closed.
func (p *Proc) waitDone(stop <-chan struct{}) bool {
	select {
	case <-p.done:
		return true
	case <-stop:
		return false
	}
}

// StopGroup stops process group pgid, which is not a Proc of this run (an
// orphan of an earlier one, already identified by Ident.Check), the same way
// Proc.Stop does: SIGTERM, up to grace, SIGKILL, a bounded wait. A group
// that is already gone is not an error.
func StopGroup(ctx context.Context, pgid int, grace time.Duration) error {
	err := terminate(ctx, grace,
		func(sig syscall.Signal) error { return signalGroup(pgid, sig) },
		func(stop <-chan struct{}) bool { return waitGroupGone(pgid, stop) })
	if err != nil {
		return fmt.Errorf("attach: stop pgid %d: %w", pgid, err)
	}
	return nil
}
