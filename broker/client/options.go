package client

import "time"

// Option sets an optional knob of New.
type Option func(*Client)

// WithTimeout sets the deadline used when a context has none (default 30s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithPingInterval sets how often a client waiting for a reply checks that
// the replica holding its request is alive (default 500ms). A replica that
// died is reported (0003/0012) within about two intervals.
func WithPingInterval(d time.Duration) Option { return func(c *Client) { c.ping = d } }
