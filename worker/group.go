package worker

import "time"

// group counts the goroutines (or jobs) an owner must wait for before it
// may go. Its fields are guarded by the owner's lock (replica.mu), so
// counting a conversation costs the warm path nothing beyond the lock it
// already holds. Unlike sync.WaitGroup.Wait run in a helper goroutine, a
// bounded wait that gives up leaves nothing behind.
type group struct {
	n    int
	zero chan struct{} // made by a waiter; closed when n drops to 0
}

func (g *group) addLocked() { g.n++ }

func (g *group) doneLocked() {
	g.n--
	if g.n == 0 && g.zero != nil {
		close(g.zero)
		g.zero = nil
	}
}

// zeroLocked returns a channel that is closed once n is 0, or nil if n
// is 0 already.
func (g *group) zeroLocked() <-chan struct{} {
	if g.n == 0 {
		return nil
	}
	if g.zero == nil {
		g.zero = make(chan struct{})
	}
	return g.zero
}

// wait waits up to d until g is empty and reports whether it is.
func (r *replica) wait(g *group, d time.Duration) bool {
	r.mu.Lock()
	zero := g.zeroLocked()
	r.mu.Unlock()
	if zero == nil {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-zero:
		return true
	case <-t.C:
		return false
	}
}

// goOwned runs f in a goroutine that belongs to g: shutdown waits for it.
func (r *replica) goOwned(g *group, f func()) {
	r.mu.Lock()
	g.addLocked()
	r.mu.Unlock()
	go func() {
		defer r.doneWith(g)
		f()
	}()
}

func (r *replica) doneWith(g *group) {
	r.mu.Lock()
	g.doneLocked()
	r.mu.Unlock()
}
