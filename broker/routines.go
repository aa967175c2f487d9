package broker

import (
	"context"
	"sync"
	"time"
)

// routines owns every goroutine, message handler run and timer of a
// broker, so that Shutdown can refuse new ones, stop the timers that have
// not fired and wait for the rest (nats-server's startGoRoutine is the
// model). Its mutex is a leaf: nothing else is locked while it is held.
type routines struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup           // one per running routine and per pending timer
	timers map[*time.Timer]struct{} // pending timers, each counted in wg
	done   chan struct{}            // closed when closed is set and wg is zero
}

func newRoutines() *routines {
	return &routines{timers: map[*time.Timer]struct{}{}, done: make(chan struct{})}
}

// enter counts one routine that runs on the caller's goroutine (a message
// handler) and reports true, unless the group is closed. After true the
// caller must call leave.
func (g *routines) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

// leave ends a routine counted by enter.
func (g *routines) leave() { g.wg.Done() }

// start runs f on a new goroutine of the group and reports true, unless
// the group is closed.
func (g *routines) start(f func()) bool {
	if !g.enter() {
		return false
	}
	go func() {
		defer g.leave()
		f()
	}()
	return true
}

// after runs f on a goroutine of the group once d has passed, and reports
// true, unless the group is closed; close stops it if it has not fired.
func (g *routines) after(d time.Duration, f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		defer g.wg.Done()
		g.mu.Lock() // also orders this read of t after its assignment below
		delete(g.timers, t)
		g.mu.Unlock()
		f()
	})
	g.timers[t] = struct{}{}
	return true
}

// close refuses new routines and stops the timers that have not fired. The
// routines already running go on; wait waits for them. close is idempotent.
func (g *routines) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	for t := range g.timers {
		if t.Stop() {
			g.wg.Done() // it will never run
		}
		delete(g.timers, t)
	}
	go func() { // ends with the last routine; nothing can be added any more
		g.wg.Wait()
		close(g.done)
	}()
}

// wait waits until the group is closed and no routine runs, or ctx is done.
func (g *routines) wait(ctx context.Context) error {
	select {
	case <-g.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
