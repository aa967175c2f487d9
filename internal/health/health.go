// Package health runs a daemon's health checks, each bounded by a
// timeout, and reports whether the component can do its job. It is a leaf
// (no HTTP, no metrics): the broker and the attach manager describe their
// checks with it, package httpd serves them as /healthz.
package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// MaxTimeout is the longest a check may take: Run cuts every check off
// after it, so a health probe answers within about a second whatever is
// down.
const MaxTimeout = time.Second

// Check is one health check.
type Check struct {
	// Name names the check in reports ("nats", "registry", …).
	Name string
	// Run returns what it found and nil when the component passes the
	// check, or an error saying in one line why not. It must return soon
	// after ctx ends (Run does not wait for it beyond that).
	Run func(ctx context.Context) (detail string, err error)
}

// Result is the outcome of one check.
type Result struct {
	Name   string  `json:"name"`
	OK     bool    `json:"ok"`
	Detail string  `json:"detail,omitempty"`
	TookMS float64 `json:"took_ms"`
}

// Report is the outcome of every check, in the order they were given.
type Report struct {
	Status string   `json:"status"` // "ok" or "fail"
	Checks []Result `json:"checks"`
}

// OK reports whether every check passed.
func (r Report) OK() bool { return r.Status == "ok" }

// Reason is the report in one line: "ok", or the failed checks as
// "name: detail" joined by "; ".
func (r Report) Reason() string {
	if r.OK() {
		return "ok"
	}
	s := ""
	for _, c := range r.Checks {
		if c.OK {
			continue
		}
		if s != "" {
			s += "; "
		}
		s += c.Name + ": " + c.Detail
	}
	return s
}

// Run runs checks concurrently, each bounded by timeout (at most
// MaxTimeout; 0 means MaxTimeout) and by ctx, and returns their report.
// A check that has not returned by then fails as "timed out after …".
func Run(ctx context.Context, checks []Check, timeout time.Duration) Report {
	if timeout <= 0 || timeout > MaxTimeout {
		timeout = MaxTimeout
	}
	type done struct {
		i      int
		detail string
		err    error
		took   time.Duration
	}
	ch := make(chan done, len(checks)) // buffered: a late check never blocks
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	for i, c := range checks {
		go func() {
			t := time.Now()
			detail, err := c.Run(ctx)
			ch <- done{i, detail, err, time.Since(t)}
		}()
	}
	rep := Report{Status: "ok", Checks: make([]Result, len(checks))}
	finished := make([]bool, len(checks))
	for i, c := range checks {
		rep.Checks[i] = Result{Name: c.Name}
	}
	apply := func(d done) {
		r := &rep.Checks[d.i]
		finished[d.i] = true
		r.OK, r.Detail, r.TookMS = d.err == nil, d.detail, ms(d.took)
		if d.err != nil {
			r.Detail = d.err.Error()
			if errors.Is(d.err, context.DeadlineExceeded) && ctx.Err() != nil && !strings.HasPrefix(r.Detail, "timed out") {
				r.Detail = "timed out after " + timeout.String() + ": " + r.Detail
			}
		}
	}
	n := 0
wait:
	for n < len(checks) {
		select {
		case d := <-ch:
			apply(d)
			n++
		case <-ctx.Done():
			break wait
		}
	}
	for n < len(checks) { // those that finished as ctx ended
		select {
		case d := <-ch:
			apply(d)
			n++
			continue
		default:
		}
		break
	}
	took := ms(time.Since(start))
	for i := range rep.Checks {
		r := &rep.Checks[i]
		if !finished[i] {
			r.Detail, r.TookMS = "timed out after "+timeout.String(), took
		}
		if !r.OK {
			rep.Status = "fail"
		}
	}
	return rep
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// NATS is the check, named component+".nats", that conn is connected to
// a NATS server.
func NATS(component string, conn *nats.Conn) Check {
	return Check{Name: component + ".nats", Run: func(context.Context) (string, error) {
		if st := conn.Status(); st != nats.CONNECTED {
			return "", fmt.Errorf("not connected to NATS (%s)", st)
		}
		return "connected to " + conn.ConnectedUrlRedacted(), nil
	}}
}
