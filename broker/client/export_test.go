package client

// Waiters returns how many reply tokens the client is waiting on.
func (c *Client) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}
