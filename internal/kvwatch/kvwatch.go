// Package kvwatch follows a JetStream KV bucket, used by the broker's
// registry and the attach manager alike, so a fix to how a watch behaves
// (stalls, reconnects) lands in one place.
//
// nats.go's KV watcher is an ordered push consumer that notices a lost
// consumer only by missed idle heartbeats: after a NATS server restart it
// delivered nothing for 13–16 s. A Follower does not wait for that. It
// recreates its watcher itself:
//
//   - at once when its connection reconnects (and again every 100–500 ms
//     until JetStream answers);
//   - when a record stored at one probe (every Config.Probe, default 1 s)
//     has not been delivered by the next, or a probe fails;
//   - when the watcher's channel closes under it.
//
// A recreated watcher resumes after the last revision delivered, so Apply
// sees every change once, in revision order, with nothing skipped that the
// bucket still stores. Guarantee: a record put within the bucket after a
// reconnect reaches Apply within about 1 s of the reconnect (one JetStream
// round trip after JetStream answers again).
package kvwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says which bucket to follow and what to do with its records.
type Config struct {
	// KV is the bucket; every key is followed. Required.
	KV jetstream.KeyValue
	// Conn is the connection KV was opened on. The Follower listens to its
	// status to recreate the watcher the moment it reconnects. Required.
	Conn *nats.Conn
	// Apply receives every record (puts, deletes and purges), in revision
	// order, each once, on Run's goroutine. Required.
	Apply func(jetstream.KeyValueEntry)
	// UpdatesOnly skips the records stored when Run starts: Apply sees
	// only later writes.
	UpdatesOnly bool
	// Current, if set, is told on Run's goroutine when the follower becomes
	// current (true) or stops being so (false); see Follower.Current.
	Current func(bool)
	// Probe is how often the follower checks that the watch keeps up
	// (default 1 s).
	Probe time.Duration
	// Log receives reports of recreated watchers (default: discarded).
	Log *slog.Logger
}

// Recreation timing.
const (
	retryMin = 100 * time.Millisecond // first retry when a watcher cannot be created
	retryMax = 500 * time.Millisecond // retries back off to this
)

// Follower follows one bucket. Create it with New, run it with Run.
type Follower struct {
	cfg Config

	mu      sync.Mutex
	last    uint64        // highest revision applied
	floor   uint64        // every revision up to it is delivered or superseded (the watcher caught up past it)
	current bool          // caught up, connected, and not known to be stalled
	changed chan struct{} // closed and replaced whenever last, floor or current change
}

// New returns a follower for cfg; nothing runs until Run.
func New(cfg Config) *Follower {
	if cfg.Probe <= 0 {
		cfg.Probe = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Follower{cfg: cfg, changed: make(chan struct{})}
}

// Current reports whether what Apply has received is the bucket's present
// state: the watcher has delivered everything the bucket stored when it was
// (re)created, the connection is up, and no probe has found it behind. It
// is false before the first catch-up, from a disconnect until the
// recreated watcher caught up, and from a stall or a failed probe until the
// same.
func (f *Follower) Current() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current
}

// Sync waits until the follower is current and has applied every record
// stored in the bucket when Sync was called. It returns an error if it
// cannot tell (the bucket's status is unavailable) or ctx ends first.
func (f *Follower) Sync(ctx context.Context) error {
	st, err := f.cfg.KV.Status(ctx)
	if err != nil {
		return fmt.Errorf("kvwatch: %s status: %w", f.cfg.KV.Bucket(), err)
	}
	want := lastSeq(st)
	for {
		f.mu.Lock()
		ok := f.current && max(f.last, f.floor) >= want
		ch := f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("kvwatch: %s not caught up: %w", f.cfg.KV.Bucket(), ctx.Err())
		}
	}
}

func lastSeq(st jetstream.KeyValueStatus) uint64 {
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		return bs.StreamInfo().State.LastSeq
	}
	return 0
}

// seen is the revision up to which the follower has everything.
func (f *Follower) seen() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return max(f.last, f.floor)
}

func (f *Follower) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *Follower) setCurrent(c bool) {
	f.mu.Lock()
	if f.current == c {
		f.mu.Unlock()
		return
	}
	f.current = c
	f.changedLocked()
	f.mu.Unlock()
	if f.cfg.Current != nil {
		f.cfg.Current(c)
	}
}

// Run follows the bucket until ctx ends or the connection closes for
// good. It blocks; its caller owns the goroutine it runs on. When Run
// returns, no watcher of it is left and the follower is not current.
func (f *Follower) Run(ctx context.Context) {
	nc := f.cfg.Conn
	status := nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer nc.RemoveStatusListener(status)

	// Old watchers are stopped off this goroutine (Stop asks the server to
	// delete the consumer and may wait for it), and drained so nats.go's
	// delivery never blocks on a full channel; Run waits for them at the end.
	var retired sync.WaitGroup
	stopCtx, cancelStops := context.WithCancel(context.Background())
	defer func() {
		cancelStops()
		retired.Wait()
	}()

	var (
		w        jetstream.KeyWatcher
		wcancel  context.CancelFunc // ends w's context (nats.go waits on it in a goroutine of its own)
		base     uint64             // the bucket's last revision just before w was created
		caughtUp bool               // w has delivered everything stored when it was created
		progress bool               // w delivered something since the last probe
		prevWant uint64             // the bucket's last revision at the previous probe (0: none)
		retry    = retryMin
		retryT   *time.Timer
		retryC   <-chan time.Time
	)
	retire := func(why string) {
		f.setCurrent(false)
		prevWant = 0
		if w == nil {
			return
		}
		if why != "" {
			f.cfg.Log.Info("recreating KV watcher", "bucket", f.cfg.KV.Bucket(), "reason", why)
		}
		old, cancel := w, wcancel
		w, wcancel = nil, nil
		retired.Add(1)
		go func() {
			defer retired.Done()
			_ = old.Stop()
			cancel()
			for {
				select {
				case _, ok := <-old.Updates():
					if !ok {
						return
					}
				case <-stopCtx.Done():
					return
				}
			}
		}()
	}
	defer retire("")
	create := func() error {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := f.cfg.KV.Status(actx)
		if err != nil {
			return err
		}
		last := lastSeq(st)
		seen := f.seen()
		var opts []jetstream.WatchOpt
		switch {
		case last < seen:
			// The bucket was recreated or its stream reset: start over.
			f.cfg.Log.Warn("KV bucket went back in revisions; reading it again", "bucket", f.cfg.KV.Bucket(), "had", seen, "now", last)
			f.mu.Lock()
			f.last, f.floor = 0, 0
			f.changedLocked()
			f.mu.Unlock()
			if f.cfg.UpdatesOnly {
				opts = append(opts, jetstream.ResumeFromRevision(last+1))
			}
		case seen > 0:
			opts = append(opts, jetstream.ResumeFromRevision(seen+1))
		case f.cfg.UpdatesOnly:
			opts = append(opts, jetstream.ResumeFromRevision(last+1))
		}
		wctx, cancelW := context.WithCancel(ctx)
		nw, err := f.cfg.KV.WatchAll(wctx, opts...)
		if err != nil {
			cancelW()
			return err
		}
		w, wcancel, base, caughtUp, progress = nw, cancelW, last, false, true
		return nil
	}
	tryCreate := func() {
		if retryT != nil {
			retryT.Stop()
			retryT, retryC = nil, nil
		}
		if w != nil || nc.Status() != nats.CONNECTED {
			return
		}
		if err := create(); err != nil {
			if ctx.Err() == nil {
				f.cfg.Log.Debug("KV watcher not created yet", "bucket", f.cfg.KV.Bucket(), "err", err)
				retryT = time.NewTimer(retry)
				retryC = retryT.C
				retry = min(2*retry, retryMax)
			}
			return
		}
		retry = retryMin
	}
	defer func() {
		if retryT != nil {
			retryT.Stop()
		}
	}()

	probe := time.NewTicker(f.cfg.Probe)
	defer probe.Stop()
	tryCreate()
	for {
		var updates <-chan jetstream.KeyValueEntry
		if w != nil {
			updates = w.Updates()
		}
		select {
		case <-ctx.Done():
			return
		case s, ok := <-status:
			switch {
			case !ok || s == nats.CLOSED || nc.IsClosed():
				return
			case s == nats.CONNECTED:
				retire("reconnected")
				retry = retryMin
				tryCreate()
			default: // disconnected: what we hold may be stale from now on
				f.setCurrent(false)
			}
		case <-retryC:
			retryT, retryC = nil, nil
			tryCreate()
		case e, ok := <-updates:
			switch {
			case !ok:
				wcancel()
				w, wcancel = nil, nil // closed under us; nothing left to stop
				retire("watcher closed")
				tryCreate()
			case e == nil:
				caughtUp = true
				f.mu.Lock()
				f.floor = max(f.floor, base)
				f.changedLocked()
				f.mu.Unlock()
				if nc.Status() == nats.CONNECTED {
					f.setCurrent(true)
				}
			default:
				progress = true
				f.apply(e)
			}
		case <-probe.C:
			if w == nil || nc.Status() != nats.CONNECTED {
				tryCreate()
				continue
			}
			if why := f.probe(ctx, caughtUp, progress, &prevWant); why != "" {
				retire(why)
				tryCreate()
				continue
			}
			progress = false
		}
	}
}

// apply hands e to Apply unless it was applied already.
func (f *Follower) apply(e jetstream.KeyValueEntry) {
	f.mu.Lock()
	if e.Revision() <= f.last {
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.cfg.Apply(e)
	f.mu.Lock()
	f.last = e.Revision()
	f.changedLocked()
	f.mu.Unlock()
}

// probe checks the watch against the bucket and returns why the watcher
// must be recreated, or "". Once caught up, the watcher must have
// delivered by now every revision the previous probe saw stored; before,
// it must at least be making progress.
func (f *Follower) probe(ctx context.Context, caughtUp, progress bool, prevWant *uint64) string {
	pctx, cancel := context.WithTimeout(ctx, f.cfg.Probe)
	defer cancel()
	st, err := f.cfg.KV.Status(pctx)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) {
			return ""
		}
		return "probe failed: " + err.Error()
	}
	want := lastSeq(st)
	defer func() { *prevWant = want }()
	switch {
	case !caughtUp && !progress:
		return "no progress before catching up"
	case caughtUp && *prevWant > 0 && f.seen() < *prevWant:
		return fmt.Sprintf("stalled: revision %d stored a probe ago, %d delivered", *prevWant, f.seen())
	}
	return ""
}

// Follow delivers every entry of w to apply until ctx is done or the
// watcher closes, then stops w. caughtUp, if not nil, is called once: when
// the watcher has delivered the bucket's initial values (its nil marker),
// or when Follow returns without having seen them. Follow blocks; its
// caller owns the goroutine it runs on.
//
// Deprecated: Follow cannot recreate w after a reconnect or a stall (a
// NATS restart left it silent for 13–16 s); use New and Follower.Run.
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
