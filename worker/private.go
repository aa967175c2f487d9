package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// The private subject (muster.rep.<id>) is read by one goroutine at a
// time, the private reader, from a channel subscription. It answers PINGs
// and routes a conversation's OLD, EOC and CANCEL (control.go); for a
// conversation served with Conv.Steps it runs the step of each OLD itself,
// as a raw NATS responder answers in its subscription's callback
// (steps.go).
//
// A step that takes its time must not hold up the PINGs, CANCELs and
// other conversations of its replica, so a stall timer, armed when the
// reader enters a step and stopped when it leaves (no wake-up while steps
// are fast), fires when one step runs longer than stallAfter: it starts a
// new reader, and the old one exits once its step is done. Messages for
// the slow step's own conversation meanwhile are PINGs, CANCEL or EOC
// (the client waits for the reply before it sends an OLD), which the new
// reader answers.

// privBuffer is how many private messages wait for the reader; beyond,
// the client library drops them as a slow consumer's (a channel
// subscription has no pending list of its own). A replica's private
// messages are a message at a time per conversation, its PINGs and
// CANCEL, and liveness PINGs: far fewer. Not the warm buffer's 65,536:
// the garbage collector scans a channel's whole buffer, and a standby's
// first call measured p99 1.5–3.0 ms with that against 1.45–1.54 ms
// with this (bench standby, three runs each).
const privBuffer = 1 << 12

// privateState is the private reader's side of its stall timer.
type privateState struct {
	privCh     chan *nats.Msg
	privStop   chan struct{} // closed once the private subscription is closed (stopPrivate)
	privOnce   sync.Once
	privSeq    atomic.Int64 // numbers the steps run inline
	privSince  atomic.Int64 // the number of the step a reader is in; 0 outside one
	privStall  *time.Timer  // fires onPrivateStall; armed only while a step runs
	privStalls atomic.Int64 // new readers started by it (tests)
	privSteps  atomic.Int64 // steps run by a reader (tests)
}

// privateReader reads the private subscription until it is closed and
// read to the end, or until a step it ran stalled and a new reader took
// over. It is a pool goroutine. It does not stop with the replica's base
// context: while a replica stops, the private subject still answers
// (PINGs, and the end of every conversation to a late message).
func (r *replica) privateReader() {
	for {
		select {
		case nm := <-r.privCh:
			if r.onPrivate(nm) {
				return
			}
		case <-r.privStop:
			r.drainPrivate()
			return
		}
	}
}

// stopPrivate runs once the private subscription is closed: the readers
// answer what it still holds and stop.
func (r *replica) stopPrivate() {
	r.privOnce.Do(func() { close(r.privStop) })
	r.drainPrivate() // if no reader runs (a start that failed)
}

// drainPrivate answers what the private subscription still holds after it
// closed (the end reasons of conversations, from their tombstones).
func (r *replica) drainPrivate() {
	for {
		select {
		case nm := <-r.privCh:
			r.onPrivate(nm)
		default:
			return
		}
	}
}

// stepInline runs the step of m, taken for c, under the stall timer, and
// reports whether another reader took over meanwhile (the caller, a
// reader, then exits).
func (r *replica) stepInline(c *Conv, m *Message, step StepFunc, ctx context.Context) (replaced bool) {
	since := r.privSeq.Add(1)
	r.privSince.Store(since)
	r.privStall.Reset(stallAfter)
	r.privSteps.Add(1)
	c.runStep(m, step, ctx)
	if r.privSince.CompareAndSwap(since, 0) {
		r.privStall.Stop()
		return false
	}
	return true
}

// onPrivateStall runs (on the timer's goroutine) when a reader has been in
// one step for stallAfter: a new reader takes the private subscription.
func (r *replica) onPrivateStall() {
	since := r.privSince.Load()
	if since == 0 || !r.privSince.CompareAndSwap(since, 0) {
		return // the step ended meanwhile
	}
	r.privStalls.Add(1)
	r.goOwned(&r.pool, r.privateReader)
}
