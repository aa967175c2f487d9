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
// stall watch takes over while the dispatcher is inside one handler for
// longer than stallAfter with requests waiting: it hands them to the pool
// workers, which serve them concurrently up to the replica's capacity.
// The watch ticks every stallCheck only while calls are being served and
// parks after stallIdle without one, so an idle replica costs nothing.
// Conversations (NEW) always go to a worker: their handler waits for the
// client's next message.

const (
	stallAfter = time.Millisecond
	stallCheck = time.Millisecond
	stallIdle  = 100 * time.Millisecond
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
// under the stall watch.
func (r *replica) serveInline(c *Conv) {
	r.inlineSince.Store(time.Now().UnixNano())
	if r.watchParked.Load() {
		select {
		case r.watchKick <- struct{}{}:
		default:
		}
	}
	r.serve(c)
	r.inlineSince.Store(0)
}

// stallWatch hands waiting warm requests to the workers while the
// dispatcher is stuck in a slow handler. It is a pool goroutine.
func (r *replica) stallWatch() {
	t := time.NewTicker(stallCheck)
	defer t.Stop()
	for {
		// Park until the dispatcher serves a call. The order (parked,
		// then look) pairs with serveInline's (store, then look): one of
		// the two always sees the other.
		r.watchParked.Store(true)
		if r.inlineSince.Load() == 0 {
			select {
			case <-r.watchKick:
			case <-r.baseCtx.Done():
				return
			}
		}
		r.watchParked.Store(false)
		t.Reset(stallCheck)
		for quiet := time.Duration(0); quiet < stallIdle; {
			select {
			case <-t.C:
			case <-r.baseCtx.Done():
				return
			}
			since := r.inlineSince.Load()
			if since == 0 {
				quiet += stallCheck
				continue
			}
			quiet = 0
			if time.Since(time.Unix(0, since)) > stallAfter {
				r.takeOver(since)
			}
		}
		t.Stop()
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

// stallState is the dispatcher's side of the stall watch.
type stallState struct {
	inlineSince atomic.Int64 // unix ns the dispatcher entered a handler; 0 outside one
	watchParked atomic.Bool  // the stall watch waits for watchKick
	watchKick   chan struct{}
}
