package worker

import "time"

// progressTick sends "working" to callers whose request this replica has
// held longer than progressDelay, and ends conversations whose client has
// been silent for convTimeout: one ticker for all (the heartbeat's), not
// timers per message.
func (r *replica) progressTick() {
	now := time.Now()
	var slow, idle []*Conv
	r.mu.Lock()
	for _, c := range r.convs {
		if c.progress && now.Sub(c.started) >= progressDelay { // sendWorking skips those already told
			slow = append(slow, c)
		}
		if !c.call {
			c.mu.Lock()
			if !c.waitSince.IsZero() && now.Sub(c.waitSince) >= r.cfg.convTimeout {
				idle = append(idle, c)
			}
			c.mu.Unlock()
		}
	}
	r.mu.Unlock()
	for _, c := range slow {
		c.sendWorking()
	}
	for _, c := range idle {
		c.timeOut()
	}
}
