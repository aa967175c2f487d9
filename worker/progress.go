package worker

import "time"

// lostAfter is how many keepalives (Muster-Keepalive) a client may miss
// before its conversation ends with 0003/0012: one late or lost PING is
// not a dead client.
const lostAfter = 3

// progressTick sends "working" to callers whose request this replica has
// held longer than progressDelay, ends conversations whose client has
// been silent for convTimeout while the handler waited, and ends those
// whose client asked for keepalives and sent nothing for lostAfter of
// them: one ticker for all (the heartbeat's), not timers per message.
//
// While the replica's own connection is down it judges no client: their
// keepalives cannot reach it. Once it is back, every client gets
// lostAfter keepalives afresh.
func (r *replica) progressTick() {
	now := time.Now()
	connected := r.nc.IsConnected()
	rejoined := connected && r.offline
	r.offline = !connected
	var slow, idle, lost []*Conv
	r.mu.Lock()
	r.eachLocked(func(c *Conv) bool {
		if c.progress && now.Sub(c.started) >= progressDelay { // sendWorking skips those already told
			slow = append(slow, c)
		}
		return true
	})
	for _, c := range r.convs {
		if c.keepalive > 0 {
			switch {
			case rejoined:
				c.heard.Store(r.mono(now))
			case connected && time.Duration(r.mono(now)-c.heard.Load()) > lostAfter*c.keepalive:
				lost = append(lost, c)
			}
		}
		c.mu.Lock()
		if !c.waitSince.IsZero() && now.Sub(c.waitSince) >= r.cfg.convTimeout {
			idle = append(idle, c)
		}
		c.mu.Unlock()
	}
	r.mu.Unlock()
	for _, c := range slow {
		c.sendWorking()
	}
	for _, c := range idle {
		c.timeOut()
	}
	for _, c := range lost {
		c.loseClient(time.Duration(r.mono(now) - c.heard.Load()))
	}
}
