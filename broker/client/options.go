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

// WithKeepalive sets the keepalive a conversation asks its replica for at
// NEW (Muster-Keepalive, default DefaultKeepalive): the client PINGs each
// open conversation at least that often, and the replica ends a
// conversation (0003/0012) whose client sent nothing for 3 keepalives, so
// a client that died or lost its connection frees its slots within about
// 3 keepalives. Values below 100ms count as 100ms; 0 asks for none (the
// replica then holds an abandoned conversation to its conversation
// timeout, CONV-NONACT).
func WithKeepalive(d time.Duration) Option { return func(c *Client) { c.keepalive = max(d, 0) } }
