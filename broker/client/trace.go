package client

import (
	"context"
	"time"
)

// Trace records what a call went through, as the caller sees it: when it
// was sent, when the broker queued it (no free replica: the cold path),
// when a replica said it took it, and when the reply came. Put one in the
// call's context with WithTrace; it costs the call nothing otherwise.
type Trace struct {
	Sent    time.Time
	Warm    bool      // a replica took it from the warm subject (no queueing)
	Queued  time.Time // the broker's "queued" status (zero: not queued)
	Seq     string    // its sequence in the queue stream
	Working time.Time // a replica's "working" status (zero: none came)
	Replica string    // the replica that took it, when it said so
	Reply   time.Time // the final reply or error
}

type traceKey struct{}

// WithTrace returns ctx carrying t: Call, CallMsg and Open fill it in.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

// traceOf returns the trace in ctx, if any.
func traceOf(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}
