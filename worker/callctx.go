package worker

import (
	"context"
	"sync"
)

// callCtx is a call's context: the replica's base context (cancelled at
// IMMED or the end of the grace) with a cancel of its own, for a CANCEL of
// that one call. It lives inside the call's Conv and costs the warm path
// nothing until the handler asks for Done: only then does it watch the
// base context (context.AfterFunc), which a context.WithCancel per call
// would do for every call (docs/PERFORMANCE.md).
type callCtx struct {
	context.Context // the replica's base context

	mu   sync.Mutex
	done chan struct{} // made by the first Done
	err  error         // why it was cancelled; nil while it is not
	stop func() bool   // stops the watch of the base context
}

// Done returns a channel closed when the call is cancelled or the replica's
// base context is done.
func (x *callCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.err != nil {
			close(x.done)
		} else {
			x.stop = context.AfterFunc(x.Context, func() { x.cancel(x.Context.Err()) })
		}
	}
	return x.done
}

// Err returns nil while the context is live, else why it ended.
func (x *callCtx) Err() error {
	x.mu.Lock()
	err := x.err
	x.mu.Unlock()
	if err != nil {
		return err
	}
	if err := x.Context.Err(); err != nil {
		x.cancel(err) // Done must be closed whenever Err is not nil
		return err
	}
	return nil
}

// cancel ends the context with err (the first reason wins) and stops the
// watch of the base context.
func (x *callCtx) cancel(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err != nil {
		return
	}
	x.err = err
	if x.done != nil {
		close(x.done)
	}
	if x.stop != nil {
		x.stop()
	}
}
