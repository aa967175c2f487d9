package client

import "time"

// Waiters returns how many reply tokens the client is waiting on.
func (c *Client) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// ResendSchedule returns the offsets from the first send at which a
// request unanswered by every broker is sent again, for a client whose
// ping interval is ping, up to limit.
func ResendSchedule(ping, limit time.Duration) []time.Duration {
	var out []time.Duration
	gap := time.Duration(resendAfter) * ping
	for at := gap; at < limit && at < resendFor; at += gap {
		out = append(out, at)
		gap *= 2
	}
	return out
}
