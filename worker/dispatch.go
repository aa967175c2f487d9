package worker

import (
	"sync/atomic"
	"time"
)

// Warm calls are served inline by one dispatcher goroutine, the way a
// nats.go micro service serves its endpoint: it reads the warm
// subscription's channel and runs each call's handler itself, so the
// replies to a batch of requests read in one socket read leave in one
// write, and no goroutine is woken per call. (With a pool of workers each
// taking a request, every call woke a goroutine and most replies left in
// a write of their own: 4.4 read/write system calls and 54 µs of CPU per
// call against 3.2 and 34 µs raw; inline, 3.2 and 44 µs — `muster bench
// warm` prints these figures.)
//
// A handler that takes its time would hold up the calls behind it, so a
// stall timer, armed when the dispatcher enters a handler and stopped when
// it leaves, fires only when one handler runs longer than stallAfter: it
// hands the requests waiting meanwhile to the pool workers, which serve
// them concurrently up to the replica's capacity, and re-arms itself every
// stallCheck while that handler runs. Arming and stopping a timer costs no
// wake-up, so a replica with fast handlers, busy or idle, never wakes for
// it (an earlier ticking watch cost 1,000 wake-ups a second per replica
// for 100 ms after every call). Conversations (NEW) always go to a worker:
// their handler waits for the client's next message.

const (
	stallAfter = time.Millisecond
	stallCheck = time.Millisecond
)

// dispatcher reads the warm path. It is a pool goroutine: it stops with
// the replica's base context.
func (r *replica) dispatcher() {
	for {
		select {
		case nm := <-r.warmCh:
			r.onWarm(nm)
		case <-r.baseCtx.Done():
			return
		}
	}
}

// serveInline runs a warm call's handler on the dispatcher's goroutine,
// under the stall timer.
func (r *replica) serveInline(c *Conv) {
	// c was accepted a moment ago: its start is the handler's (a clock
	// read less per call).
	r.inlineSince.Store(c.started.UnixNano())
	r.stall.Reset(stallAfter)
	r.serveFrom(c, c.started)
	r.inlineSince.Store(0)
	r.stall.Stop()
}

// onStall runs (on the timer's goroutine) when the dispatcher has been in
// one handler for stallAfter: the waiting warm requests go to workers.
func (r *replica) onStall() {
	since := r.inlineSince.Load()
	if since == 0 {
		return // the handler returned meanwhile
	}
	r.stalls.Add(1)
	r.takeOver(since)
	if r.inlineSince.Load() == since {
		r.stall.Reset(stallCheck) // still in it: look again
	}
}

// takeOver serves the warm requests that wait while the dispatcher is in
// the handler it entered at since: each goes to a worker.
func (r *replica) takeOver(since int64) {
	for r.inlineSince.Load() == since {
		select {
		case nm := <-r.warmCh:
			c, handled := r.accept(nm, nm.Reply, "")
			switch {
			case c != nil:
				r.handOver(c)
			case !handled:
				r.forward(nm)
			}
		default:
			return
		}
	}
}

// stallState is the dispatcher's side of the stall timer.
type stallState struct {
	inlineSince atomic.Int64 // unix ns the dispatcher entered a handler; 0 outside one
	stall       *time.Timer  // fires onStall; armed only while a handler runs inline
	stalls      atomic.Int64 // times it fired (tests)
}
