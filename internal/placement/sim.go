package placement

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"time"
)

// SimConfig is a simulated pool: Hosts hosts of MaxUsers users each; users
// (each served by a replica of capacity 1) arrive at random (Poisson) and
// stay for an exponential time of mean 1, at a rate that keeps Load of all
// user slots busy on average. Hosts report their figures every Heartbeat
// (in units of the mean stay), so the chooser sees them up to a heartbeat
// old, as a broker does.
type SimConfig struct {
	Hosts     int     // default 100
	MaxUsers  int     // per host; default 100
	Load      float64 // busy share of all slots; default 0.8
	Heartbeat float64 // figure refresh interval, in mean stays; default 0.02
	Arrivals  int     // users simulated; default 200000
	Seed      uint64
}

func (c *SimConfig) defaults() {
	if c.Hosts <= 0 {
		c.Hosts = 100
	}
	if c.MaxUsers <= 0 {
		c.MaxUsers = 100
	}
	if c.Load <= 0 {
		c.Load = 0.8
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 0.02
	}
	if c.Arrivals <= 0 {
		c.Arrivals = 200000
	}
}

// SimResult is how a scheme did.
type SimResult struct {
	Scheme Scheme
	// MaxOverMean is max/mean users per host, averaged over the samples
	// (one per heartbeat after the first fifth of the run); Worst is the
	// largest sample.
	MaxOverMean, Worst float64
	// Refused is the share of arrivals no host took (all full, as far as
	// the chooser could tell, or the chosen one was full in fact).
	Refused float64
}

type departure struct {
	at   float64
	host int
}

type departures []departure

func (d departures) Len() int           { return len(d) }
func (d departures) Less(i, j int) bool { return d[i].at < d[j].at }
func (d departures) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *departures) Push(x any)        { *d = append(*d, x.(departure)) }
func (d *departures) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// Simulate runs scheme s on the pool of c.
func Simulate(s Scheme, c SimConfig) SimResult {
	c.defaults()
	rng := rand.New(rand.NewPCG(c.Seed, 7))
	ch := New(c.Seed + 1)
	users := make([]int, c.Hosts)      // true users per host
	view := make([]Candidate, c.Hosts) // what the hosts last reported
	for i := range view {
		view[i] = Candidate{ID: fmt.Sprintf("host-%03d", i), MaxUsers: c.MaxUsers, MaxReplicas: c.MaxUsers}
	}
	refresh := func() {
		for i := range view {
			u := users[i]
			// Figures that follow the users, each with its own noise, as
			// a host's would.
			view[i].Users, view[i].Replicas, view[i].Placed = u, u, 0
			view[i].MemFree = uint64(64<<30) - uint64(u)*(200<<20) + uint64(rng.IntN(256<<20))
			view[i].CPUPercent = float64(u)*0.9 + rng.Float64()*5
			view[i].EventsPerSec = float64(u)*10 + rng.Float64()*50
			view[i].BytesPerSec = float64(u)*4096 + rng.Float64()*20000
		}
	}
	rate := c.Load * float64(c.Hosts*c.MaxUsers) // arrivals per mean stay
	var deps departures
	now, nextBeat := 0.0, 0.0
	cands := make([]Candidate, 0, c.Hosts)
	idx := make([]int, 0, c.Hosts)
	var sum, worst float64
	samples, refused := 0, 0
	warm := c.Arrivals / 5
	for a := 0; a < c.Arrivals; a++ {
		now += rng.ExpFloat64() / rate
		for len(deps) > 0 && deps[0].at <= now {
			d := heap.Pop(&deps).(departure)
			users[d.host]--
		}
		for now >= nextBeat {
			refresh()
			nextBeat += c.Heartbeat
			if a >= warm {
				total, mx := 0, 0
				for _, u := range users {
					total += u
					mx = max(mx, u)
				}
				if total > 0 {
					r := float64(mx) / (float64(total) / float64(c.Hosts))
					sum += r
					worst = max(worst, r)
					samples++
				}
			}
		}
		cands, idx = cands[:0], idx[:0]
		for i, v := range view {
			if v.Eligible() {
				cands = append(cands, v)
				idx = append(idx, i)
			}
		}
		k, _ := ch.Choose(s, cands)
		if k < 0 {
			refused++
			continue
		}
		h := idx[k]
		view[h].Placed++
		if users[h] >= c.MaxUsers { // the manager's own clamp
			refused++
			continue
		}
		users[h]++
		heap.Push(&deps, departure{at: now + rng.ExpFloat64(), host: h})
	}
	res := SimResult{Scheme: s, Worst: worst, Refused: float64(refused) / float64(c.Arrivals)}
	if samples > 0 {
		res.MaxOverMean = sum / float64(samples)
	}
	return res
}

// DecisionTime measures one placement decision as a broker makes it: look
// the service up in an index of services → hosts, collect its eligible
// candidates with their figures, and choose. Every host offers every
// service (the worst case: hosts candidates per decision). It returns the
// mean time per decision over n decisions.
func DecisionTime(s Scheme, hosts, services, n int, seed uint64) time.Duration {
	rng := rand.New(rand.NewPCG(seed, 11))
	all := make([]Candidate, hosts)
	for i := range all {
		all[i] = Candidate{ID: fmt.Sprintf("host-%03d", i), Users: rng.IntN(80), MaxUsers: 100, Replicas: rng.IntN(80), MaxReplicas: 100,
			MemFree: uint64(rng.IntN(64 << 30)), CPUPercent: rng.Float64() * 100, EventsPerSec: rng.Float64() * 1000, BytesPerSec: rng.Float64() * 1e6}
	}
	// Every host offers every service: the worst case, 100 candidates each.
	offers := make([][]int, services)
	for sv := range offers {
		offers[sv] = make([]int, hosts)
		for h := range offers[sv] {
			offers[sv][h] = h
		}
	}
	ch := New(seed)
	cands := make([]Candidate, 0, hosts)
	start := time.Now()
	for i := 0; i < n; i++ {
		sv := rng.IntN(services)
		cands = cands[:0]
		for _, h := range offers[sv] {
			if all[h].Eligible() {
				cands = append(cands, all[h])
			}
		}
		k, why := ch.Choose(s, cands)
		sink += k + len(why)
	}
	return time.Since(start) / time.Duration(n)
}

// sink keeps the compiler from dropping the decisions DecisionTime times.
var sink int
