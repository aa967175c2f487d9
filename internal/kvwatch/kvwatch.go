// Package kvwatch is the one loop that follows a JetStream KV watcher, used
// by the broker's registry and the attach manager alike, so a fix to how a
// watch behaves (stalls, reconnects) lands in one place.
package kvwatch

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// Follow delivers every entry of w to apply until ctx is done or the
// watcher closes, then stops w. caughtUp, if not nil, is called once: when
// the watcher has delivered the bucket's initial values (its nil marker),
// or when Follow returns without having seen them. Follow blocks; its
// caller owns the goroutine it runs on.
func Follow(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry), caughtUp func()) {
	defer func() { _ = w.Stop() }()
	done := caughtUp == nil
	defer func() {
		if !done {
			caughtUp()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if !done {
					done = true
					caughtUp()
				}
				continue
			}
			apply(e)
		}
	}
}
