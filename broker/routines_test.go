package broker

import (
	"context"
	"testing"
	"time"
)

// TestRoutinesStopTimers: close stops a timer that has not fired (it never
// runs), waits for one that is running, and refuses new routines.
func TestRoutinesStopTimers(t *testing.T) {
	g := newRoutines()
	late := make(chan struct{})
	if !g.after(50*time.Millisecond, func() { close(late) }) {
		t.Fatal("after refused before close")
	}
	running, release := make(chan struct{}), make(chan struct{})
	if !g.after(0, func() { close(running); <-release }) {
		t.Fatal("after refused before close")
	}
	<-running
	g.close()
	if g.start(func() {}) || g.after(0, func() {}) || g.enter() {
		t.Fatal("a routine was accepted after close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.wait(ctx); err == nil {
		t.Fatal("wait returned while a timer's function was running")
	}
	close(release)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.wait(ctx); err != nil {
		t.Fatal(err)
	}
	select { // a stopped timer never fires: give it ample time to prove it
	case <-late:
		t.Fatal("a timer stopped by close fired")
	case <-time.After(200 * time.Millisecond):
	}
	g.close() // idempotent
}
