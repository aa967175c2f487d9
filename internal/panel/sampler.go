package panel

import (
	"context"
	"sync"
	"time"

	"github.com/musterhq/muster/internal/picture"
)

// Sampling: one goroutine reads the picture, at most once a second while
// a page is open (watchers > 0), every idleEvery otherwise so the chart
// has a history when a page opens. It starts with the panel's first
// request and stops when nobody has used the panel for historySpan (the
// next request starts it again), so a daemon whose panel nobody watches
// reads nothing. Each sample ends the current generation (closes gen),
// which wakes the event streams.

const (
	watchEvery  = time.Second
	idleEvery   = 5 * time.Second
	historySpan = 10 * time.Minute
	gatherLimit = 3 * time.Second
)

// sample is one point of the chart.
type sample struct {
	at       time.Time
	requests int64   // every service's requests so far
	rate     float64 // requests per second since the previous sample
	queued   int     // requests waiting in the queue (pending)
}

// state is the latest picture and its history.
type state struct {
	pic  *picture.Picture
	err  error // the last gather's failure (pic is then the last good one)
	at   time.Time
	hist []sample
}

type sampler struct {
	gather func(context.Context) (*picture.Picture, error)
	now    func() time.Time
	// idleEvery is the pace while no page is open; idleStop how long the
	// sampling goes on after the last use.
	idleEvery, idleStop time.Duration
	// follow, if set, calls changed with each replica registration
	// written or removed, until the returned function is called: a new or
	// gone replica is then sampled at once, not at the next tick.
	follow func(changed func(key string, deleted bool)) (func(), error)

	stop chan struct{} // closed by close
	kick chan struct{}
	wg   sync.WaitGroup // the sampling goroutine

	mu       sync.Mutex
	st       state           // guarded by mu
	gen      chan struct{}   // closed at the next sample; guarded by mu
	watchers int             // open event streams; guarded by mu
	running  bool            // the sampling goroutine runs; guarded by mu
	closed   bool            // guarded by mu
	lastUse  time.Time       // guarded by mu
	known    map[string]bool // the replicas of the last picture; guarded by mu
}

func newSampler(gather func(context.Context) (*picture.Picture, error)) *sampler {
	return &sampler{gather: gather, now: time.Now, idleEvery: idleEvery, idleStop: historySpan, stop: make(chan struct{}),
		kick: make(chan struct{}, 1), gen: make(chan struct{})}
}

// useLocked records a use and starts the sampling goroutine if it is not
// running.
func (s *sampler) useLocked() {
	s.lastUse = time.Now()
	if s.running || s.closed {
		return
	}
	s.running = true
	s.wg.Add(1)
	go s.run()
}

// close stops sampling and waits for it; it wakes every waiter.
func (s *sampler) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// refresh asks for a sample now (after an action).
func (s *sampler) refresh() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// minGap is the least time between two samples, however often they
// are asked for.
const minGap = 200 * time.Millisecond

func (s *sampler) run() {
	defer s.wg.Done()
	if s.follow != nil {
		if unfollow, err := s.follow(s.changed); err == nil {
			defer unfollow()
		}
	}
	start := time.Time{}
	for {
		if wait := minGap - time.Since(start); wait > 0 {
			select {
			case <-s.stop:
				return
			case <-time.After(wait):
			}
		}
		start = time.Now()
		select { // a request made before this sample starts is served by it
		case <-s.kick:
		default:
		}
		s.once()
		s.mu.Lock()
		every := s.idleEvery
		if s.watchers > 0 {
			every = watchEvery
		} else if time.Since(s.lastUse) > s.idleStop {
			s.running = false // nobody looks: stop until the next use
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		// A fixed pace: the next sample a period after this one started
		// (not ended), but never back to back.
		t := time.NewTimer(max(every-time.Since(start), every/10))
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// changed asks for a sample when a replica appeared or went.
func (s *sampler) changed(key string, deleted bool) {
	s.mu.Lock()
	news := s.known[key] == deleted
	s.mu.Unlock()
	if news {
		s.refresh()
	}
}

// once takes one sample.
func (s *sampler) once() {
	ctx, cancel := context.WithTimeout(context.Background(), gatherLimit)
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	pic, err := s.gather(ctx)
	cancel()
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.at, s.st.err = now, err
	if err == nil {
		s.st.pic = pic
		s.st.hist = appendSample(s.st.hist, pointOf(now, pic), now)
		s.known = make(map[string]bool, len(pic.Replicas))
		for _, r := range pic.Replicas {
			s.known[r.ID] = true
		}
	}
	close(s.gen)
	s.gen = make(chan struct{})
}

// pointOf sums a picture's requests and queued requests.
func pointOf(at time.Time, p *picture.Picture) sample {
	pt := sample{at: at}
	for _, s := range p.Services {
		pt.requests += s.Requests
		pt.queued += s.Pending
	}
	return pt
}

// appendSample adds pt with its rate and drops what is older than the
// chart's span.
func appendSample(hist []sample, pt sample, now time.Time) []sample {
	if n := len(hist); n > 0 {
		prev := hist[n-1]
		if dt := pt.at.Sub(prev.at).Seconds(); dt > 0 && pt.requests >= prev.requests {
			// A counter that went down (a broker or host restarted) starts
			// over: no rate for that interval.
			pt.rate = float64(pt.requests-prev.requests) / dt
		}
	}
	hist = append(hist, pt)
	cut := 0
	for cut < len(hist) && now.Sub(hist[cut].at) > historySpan {
		cut++
	}
	return hist[cut:]
}

// current returns the state and the channel closed at the next sample.
func (s *sampler) current() (state, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.useLocked()
	st := s.st
	st.hist = append([]sample(nil), s.st.hist...)
	return st, s.gen
}

// fresh returns a state at most maxAge old, waiting (until ctx ends) for
// a sample if need be.
func (s *sampler) fresh(ctx context.Context, maxAge time.Duration) state {
	st, next := s.current()
	if st.pic != nil && s.now().Sub(st.at) <= maxAge {
		return st
	}
	s.refresh()
	select {
	case <-next:
	case <-ctx.Done():
	case <-s.stop:
	}
	st, _ = s.current()
	return st
}

// watch counts an open stream until the returned function is called.
func (s *sampler) watch() func() {
	s.mu.Lock()
	s.watchers++
	s.useLocked()
	s.mu.Unlock()
	s.refresh() // go to the faster pace now
	return func() {
		s.mu.Lock()
		s.watchers--
		s.lastUse = time.Now()
		s.mu.Unlock()
	}
}
