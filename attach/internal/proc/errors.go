package proc

import (
	"errors"
	"fmt"
	"runtime"
)

var (
	// ErrDone is returned by Proc.Signal once the replica has exited and
	// been reaped: its process group id may belong to someone else by now.
	ErrDone = errors.New("attach: process has exited")
	// ErrRunning is the Err of the ExitStatus that Proc.Exit returns before
	// Done is closed.
	ErrRunning = errors.New("attach: process still running")
	// ErrPath means Spec.Path is not an absolute path.
	ErrPath = errors.New("attach: program path must be absolute")
	// ErrGroupSurvived means members of a process group were still alive
	// after SIGKILL and a bounded wait (for example a process in
	// uninterruptible sleep).
	ErrGroupSurvived = errors.New("attach: process group still alive after SIGKILL")
	// ErrUnsupported is returned on operating systems other than Linux. It
	// wraps errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("attach manager: not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
)
