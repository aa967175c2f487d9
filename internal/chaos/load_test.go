package chaos

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
)

// outcome is one call's result.
type outcome struct {
	id         string
	start, end time.Time
	ok         bool   // the right reply
	wrong      bool   // a reply that is not the request's echo
	code       string // the coded error, "" if none
	other      string // an error without a code
	hung       bool   // not ended within its deadline plus a margin
	trace      client.Trace
}

// load runs workers callers in a loop until stop, each call with deadline
// and a handler time of work. It records every call's outcome.
type load struct {
	c        *client.Client
	prefix   string
	workers  int
	work     time.Duration
	deadline time.Duration

	mu       sync.Mutex
	outs     []outcome
	wg       sync.WaitGroup
	stop     chan struct{}
	inFlight atomic.Int64
}

// hangMargin is how long after its deadline a call may take to end before
// it counts as a hang.
const hangMargin = 2 * time.Second

func startLoad(c *client.Client, prefix string, workers int, work, deadline time.Duration) *load {
	l := &load{c: c, prefix: prefix, workers: workers, work: work, deadline: deadline, stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go l.worker(w)
	}
	return l
}

func (l *load) worker(w int) {
	defer l.wg.Done()
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		id := fmt.Sprintf("%s-%d-%d", l.prefix, w, n)
		o := outcome{id: id, start: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), l.deadline)
		l.inFlight.Add(1)
		// Traced, so a call that goes wrong says how far it got (queued?
		// taken, and by whom?): the trace costs the call nothing else.
		reply, err := l.c.Call(client.WithTrace(ctx, &o.trace), service, payload(id, l.work))
		l.inFlight.Add(-1)
		cancel()
		o.end = time.Now()
		var pe *proto.Error
		switch {
		case err == nil && string(reply) == string(payload(id, l.work)):
			o.ok = true
		case err == nil:
			o.wrong = true
		case errors.As(err, &pe):
			o.code = pe.Code.String()
		default:
			o.other = err.Error()
		}
		if o.end.Sub(o.start) > l.deadline+hangMargin {
			o.hung = true
		}
		l.mu.Lock()
		l.outs = append(l.outs, o)
		l.mu.Unlock()
		if !o.ok {
			time.Sleep(10 * time.Millisecond) // a failing system is not hammered
		}
	}
}

// finish stops the callers and waits for their last calls; callers still
// inside a call after deadline plus margin count as hangs.
func (l *load) finish(t *testing.T) *tally {
	t.Helper()
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	stuck := 0
	select {
	case <-done:
	case <-time.After(l.deadline + hangMargin + time.Second):
		stuck = int(l.inFlight.Load()) // calls that did not end by their deadline and more
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return newTally(l.outs, stuck)
}

// tally sums a scenario's outcomes.
type tally struct {
	calls, ok, wrong, hung, other int
	codes                         map[string]int
	otherText                     []string
	outs                          []outcome
}

func newTally(outs []outcome, stuck int) *tally {
	t := &tally{codes: map[string]int{}, outs: outs, hung: stuck}
	for _, o := range outs {
		t.calls++
		switch {
		case o.ok:
			t.ok++
		case o.wrong:
			t.wrong++
		case o.code != "":
			t.codes[o.code]++
		default:
			t.other++
			if len(t.otherText) < 3 {
				t.otherText = append(t.otherText, o.other)
			}
		}
		if o.hung {
			t.hung++
		}
	}
	return t
}

func (t *tally) String() string {
	var codes []string
	for c, n := range t.codes {
		codes = append(codes, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(codes)
	return fmt.Sprintf("%d calls: %d ok, %d wrong, %d hung, coded errors [%s], other errors %d %q",
		t.calls, t.ok, t.wrong, t.hung, strings.Join(codes, " "), t.other, t.otherText)
}

// recoveredAfter is how long after at the calls succeed again: from at to
// the start of the first call that begins a run of successes (see below).
// It is negative if the calls never recovered.
func (t *tally) recoveredAfter(at time.Time) time.Duration {
	outs := append([]outcome(nil), t.outs...)
	sort.Slice(outs, func(i, j int) bool { return outs[i].start.Before(outs[j].start) })
	// Serving again: the first call, started after at, that begins a run
	// of runOK successful calls (by start). A lone late failure (a call
	// held by a replica on a lost node, or in flight across a cut: both
	// coded and expected) does not undo a recovery.
	const runOK = 5
	for i := range outs {
		if outs[i].start.Before(at) || i+runOK > len(outs) {
			continue
		}
		good := true
		for _, o := range outs[i : i+runOK] {
			good = good && o.ok
		}
		if good {
			return max(outs[i].start.Sub(at), 0)
		}
	}
	return -1
}

// duplicates lists request ids executed more than once.
func duplicates(exec map[string]int) []string {
	var d []string
	for id, n := range exec {
		if n > 1 && id != "ready" {
			d = append(d, fmt.Sprintf("%s×%d", id, n))
		}
	}
	sort.Strings(d)
	return d
}
