package worker

import (
	"time"

	"github.com/musterhq/muster/broker/proto"
)

// A replica serves with a fixed pool of cfg.capacity worker goroutines
// (no goroutine per call: see docs/PERFORMANCE.md) beside the warm path's
// dispatcher (dispatch.go). A worker serves the conversations handed to it:
// NEWs from the dispatcher, queued requests from the pull, warm calls from
// the stall timer and the forwarder. The workers stop with the replica's
// base context.

// worker is one of the replica's pool goroutines.
func (r *replica) worker() {
	for {
		select {
		case c := <-r.work:
			r.serve(c)
		case <-r.baseCtx.Done():
			return
		}
	}
}

// handOver gives an accepted conversation (its slot reserved) to a worker.
// It waits while every worker is busy (a handler may go on after its final
// reply has freed its slot), but not past the replica's end: a conversation
// no worker will take is ended at once (refuse).
func (r *replica) handOver(c *Conv) {
	select {
	case r.work <- c:
	case <-r.baseCtx.Done():
		r.refuse(c)
	}
}

// refuse ends a conversation that no worker will serve, as IMMED ends the
// open ones: its client gets 0003/0010 and its slot is freed.
func (r *replica) refuse(c *Conv) {
	c.abort(proto.ErrDeregistered)
	r.finished(c)
}

// serve runs the handler for one conversation and frees its slot.
func (r *replica) serve(c *Conv) { r.serveFrom(c, time.Now()) }

// serveFrom runs c's handler, counting its time from start.
func (r *replica) serveFrom(c *Conv, start time.Time) {
	err := safeServe(r.h, c)
	r.stats.procNS.Add(int64(time.Since(start)))
	if err != nil {
		r.stats.errors.Add(1)
		r.stats.lastError.Store(err.Error())
	}
	c.finish(err)
	r.finished(c)
}

func safeServe(h Handler, c *Conv) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = proto.Errorf(proto.CodeServiceError, "handler panicked: %v", p)
		}
	}()
	return h.Serve(c.ctx, c)
}
