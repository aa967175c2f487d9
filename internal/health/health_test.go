package health_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/internal/health"
	"github.com/musterhq/muster/internal/testutil"
)

// TestRun: checks run at once, each bounded by the timeout; the report
// keeps their order; Reason names the failed ones.
func TestRun(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	checks := []health.Check{
		{Name: "fine", Run: func(context.Context) (string, error) { return "all good", nil }},
		{Name: "broken", Run: func(context.Context) (string, error) { return "", errors.New("it broke") }},
		{Name: "slow", Run: func(ctx context.Context) (string, error) { <-ctx.Done(); return "", ctx.Err() }},
		{Name: "deaf", Run: func(context.Context) (string, error) { <-release; return "", nil }}, // ignores ctx
	}
	start := time.Now()
	rep := health.Run(context.Background(), checks, 200*time.Millisecond)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run took %v with a 200ms timeout", took)
	}
	if rep.OK() || rep.Status != "fail" || len(rep.Checks) != 4 {
		t.Fatalf("report %+v", rep)
	}
	for i, want := range []struct {
		name   string
		ok     bool
		detail string
	}{{"fine", true, "all good"}, {"broken", false, "it broke"}, {"slow", false, "timed out after 200ms"}, {"deaf", false, "timed out after 200ms"}} {
		c := rep.Checks[i]
		if c.Name != want.name || c.OK != want.ok || !strings.HasPrefix(c.Detail, want.detail) {
			t.Errorf("check %d: %+v, want %+v", i, c, want)
		}
	}
	if r := rep.Reason(); !strings.HasPrefix(r, "broken: it broke; slow: timed out after 200ms") || !strings.HasSuffix(r, "; deaf: timed out after 200ms") {
		t.Errorf("reason %q", r)
	}
	if rep.Checks[3].TookMS < 200 {
		t.Errorf("deaf took_ms %v, want at least the timeout", rep.Checks[3].TookMS)
	}

	ok := health.Run(context.Background(), checks[:1], 0)
	if !ok.OK() || ok.Reason() != "ok" {
		t.Errorf("healthy report %+v", ok)
	}
}

// TestNATS: the NATS check passes while connected and fails, at once,
// when the connection is not.
func TestNATS(t *testing.T) {
	s := testutil.StartNATS(t)
	nc := testutil.Connect(t, s)
	c := health.NATS("test", nc)
	if d, err := c.Run(context.Background()); err != nil || !strings.Contains(d, s.ClientURL()) {
		t.Fatalf("connected: %q %v", d, err)
	}
	nc.Close()
	if _, err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "CLOSED") {
		t.Fatalf("closed: %v", err)
	}
}
