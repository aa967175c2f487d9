package worker

import (
	"sync"
	"time"
)

// A conversation's OLD messages arrive on the private subscription's
// goroutine (onPrivate), which hands each to the handler waiting for it in
// Receive. Left to themselves, the handlers of a replica's conversations
// would each publish their reply at a different moment, and each reply
// would wake the connection's flusher into a write of its own: one write
// system call per message where a raw NATS responder, answering in its
// callback, sends a batch of replies in one. So after handing an OLD to a
// waiting handler, onPrivate waits for the handler to hand its turn back
// (its reply has gone out, or it returned) before it takes the next
// message: the handlers of one batch of messages then answer one after the
// other on the private subscription's turn, and their replies leave in one
// write. The handler still runs on its own goroutine and owns its
// conversation (Receive/Reply in a loop); only the order is changed.
//
// A handler that takes its time must not hold up the other conversations:
// onPrivate waits at most turnWait, and does not wait for that
// conversation's next message at all (the one after is tried again).

// turnWait bounds how long onPrivate waits for a handler's reply.
const turnWait = time.Millisecond

// turnTimers holds the timers that bound the waits: onPrivate runs on one
// goroutine, but tests call it from several.
var turnTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// startTurnLocked reports whether onPrivate, which just handed an OLD to
// c, should wait for c's reply: only when the handler was waiting for it
// in Receive, and its last turn did not time out.
func (c *Conv) startTurnLocked() bool {
	if c.waitSince.IsZero() || c.turn == nil {
		return false
	}
	if c.slowTurn {
		c.slowTurn = false // try again next time
		return false
	}
	if !c.stepping.CompareAndSwap(false, true) {
		return false // another wait for c is under way
	}
	return true
}

// awaitTurn waits (up to turnWait) until c's handler hands the turn back.
func (c *Conv) awaitTurn() {
	t := turnTimers.Get().(*time.Timer)
	t.Reset(turnWait)
	select {
	case <-c.turn:
		t.Stop()
	case <-t.C:
		if c.stepping.CompareAndSwap(true, false) {
			c.mu.Lock()
			c.slowTurn = true
			c.mu.Unlock()
		} else {
			<-c.turn // the handler is handing it back just now
		}
	}
	turnTimers.Put(t)
}

// endTurn hands the turn back to onPrivate, if it waits for this
// conversation: the handler's reply has gone out, or it returned.
func (c *Conv) endTurn() {
	if c.stepping.Load() && c.stepping.CompareAndSwap(true, false) {
		c.turn <- struct{}{}
	}
}
