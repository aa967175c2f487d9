// Package placement chooses the attach manager (host) that starts the next
// replica of a service, by one of several schemes. It is pure: the broker
// gives it the candidates (the hosts able to start the service right now,
// with their last reported figures) and it returns one, with the reason.
//
// Figures come from the hosts' registrations, written once per heartbeat,
// so they are up to a heartbeat old; a broker that places several replicas
// within one heartbeat must not pile them onto the host that looked best at
// the last heartbeat. Each candidate therefore carries Placed: the
// placements this broker made on it since its figures were written, and
// every scheme counts them (see Choose).
package placement

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Scheme is a placement scheme.
type Scheme string

// The schemes. Each optimises one figure; see docs/OPERATIONS.md
// "Placement" for when to pick which.
const (
	Users     Scheme = "users"       // fewest users (open calls and conversations) per host
	Ratio     Scheme = "ratio"       // lowest used/allowed users ratio
	Memory    Scheme = "memory"      // most free memory
	CPU       Scheme = "cpu"         // lowest CPU load
	Events    Scheme = "events"      // fewest events per second
	Bandwidth Scheme = "bandwidth"   // lowest bandwidth (bytes per second)
	Random    Scheme = "random"      // uniformly random
	RoundRob  Scheme = "round-robin" // each candidate in turn
	P2C       Scheme = "p2c"         // power of two choices on users: the less busy of two random candidates
)

// Default is the scheme used when none is set.
const Default = P2C

// Schemes lists every scheme, in the order of the docs.
var Schemes = []Scheme{P2C, Users, Ratio, Memory, CPU, Events, Bandwidth, Random, RoundRob}

// Parse returns the scheme named s ("" is Default).
func Parse(s string) (Scheme, error) {
	if s == "" {
		return Default, nil
	}
	for _, sc := range Schemes {
		if string(sc) == s {
			return sc, nil
		}
	}
	names := make([]string, len(Schemes))
	for i, sc := range Schemes {
		names[i] = string(sc)
	}
	return "", fmt.Errorf("unknown placement scheme %q (one of %s)", s, strings.Join(names, ", "))
}

// Candidate is a host able to start the service now: online, enabled, not
// isolated, offering the service, not failing it, under its limits. The
// caller filters; Eligible checks the limits.
type Candidate struct {
	ID                    string
	Users, MaxUsers       int // open calls and conversations; allowed (0: no limit)
	Replicas, MaxReplicas int // replicas running or starting; allowed (0: no limit)
	MemFree               uint64
	CPUPercent            float64
	EventsPerSec          float64
	BytesPerSec           float64
	// Placed is how many replicas this chooser placed on it since its
	// figures were written (not yet in them).
	Placed int
}

// Eligible reports whether c has room for one more replica.
func (c Candidate) Eligible() bool {
	if c.MaxReplicas > 0 && c.Replicas+c.Placed >= c.MaxReplicas {
		return false
	}
	if c.MaxUsers > 0 && c.Users >= c.MaxUsers {
		return false
	}
	return true
}

// users is the candidate's users counting this chooser's recent
// placements as one user each (a replica is started for waiting work).
func (c Candidate) users() int { return c.Users + c.Placed }

// Chooser chooses among candidates. Safe for concurrent use.
type Chooser struct {
	turn atomic.Uint64
	mu   sync.Mutex
	rng  *rand.Rand
}

// New returns a chooser whose random schemes draw from seed.
func New(seed uint64) *Chooser {
	return &Chooser{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (ch *Chooser) intn(n int) int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.rng.IntN(n)
}

// Choose returns the index in cands of the host to start the next replica
// on, and why, or -1 when cands is empty. cands must be eligible; their
// order does not matter (ties go to the smaller ID, round-robin goes by
// ID).
//
// The figure schemes (memory, cpu, events, bandwidth) take the best figure
// among the candidates with the fewest recent placements: figures are up
// to a heartbeat old, so a burst spreads over the hosts in order of their
// figures instead of landing on the one that looked best.
func (ch *Chooser) Choose(s Scheme, cands []Candidate) (int, string) {
	n := len(cands)
	switch {
	case n == 0:
		return -1, "no host can take it"
	case n == 1:
		return 0, fmt.Sprintf("%s: %s is the only candidate", s, cands[0].ID)
	}
	switch s {
	case Random:
		i := ch.intn(n)
		return i, fmt.Sprintf("random: %s of %d candidates", cands[i].ID, n)
	case RoundRob:
		order := byID(cands)
		i := order[int(ch.turn.Add(1)%uint64(n))]
		return i, fmt.Sprintf("round-robin: %s, next in turn of %d", cands[i].ID, n)
	case P2C:
		a := ch.intn(n)
		b := ch.intn(n - 1)
		if b >= a {
			b++
		}
		i, j := a, b
		if better(cands[j].users(), cands[i].users(), cands[j], cands[i]) {
			i, j = j, i
		}
		return i, fmt.Sprintf("p2c: %s (%d users) over %s (%d users)", cands[i].ID, cands[i].users(), cands[j].ID, cands[j].users())
	case Users:
		i := best(cands, func(c Candidate) float64 { return float64(c.users()) })
		return i, fmt.Sprintf("users: %s has the fewest (%d) of %d candidates", cands[i].ID, cands[i].users(), n)
	case Ratio:
		i := best(cands, func(c Candidate) float64 { return ratio(c) })
		return i, fmt.Sprintf("ratio: %s has the lowest used/allowed (%d/%d) of %d candidates", cands[i].ID, cands[i].users(), cands[i].MaxUsers, n)
	}
	minPlaced := cands[0].Placed
	for _, c := range cands[1:] {
		minPlaced = min(minPlaced, c.Placed)
	}
	var fig func(Candidate) float64
	var what string
	switch s {
	case Memory:
		fig, what = func(c Candidate) float64 { return -float64(c.MemFree) }, "most free memory"
	case CPU:
		fig, what = func(c Candidate) float64 { return c.CPUPercent }, "lowest CPU load"
	case Events:
		fig, what = func(c Candidate) float64 { return c.EventsPerSec }, "fewest events/s"
	case Bandwidth:
		fig, what = func(c Candidate) float64 { return c.BytesPerSec }, "lowest bandwidth"
	default:
		return ch.Choose(Default, cands)
	}
	i := best(cands, func(c Candidate) float64 {
		if c.Placed > minPlaced {
			return inf
		}
		return fig(c)
	})
	return i, fmt.Sprintf("%s: %s has the %s of %d candidates", s, cands[i].ID, what, n)
}

const inf = 1e308

// better: a is better than b on the figure (fewer), then on free replica
// room, then by ID.
func better(fa, fb int, a, b Candidate) bool {
	if fa != fb {
		return fa < fb
	}
	if ra, rb := ratioReplicas(a), ratioReplicas(b); ra != rb {
		return ra < rb
	}
	return a.ID < b.ID
}

func ratio(c Candidate) float64 {
	if c.MaxUsers <= 0 {
		return float64(c.users())
	}
	return float64(c.users()) / float64(c.MaxUsers)
}

func ratioReplicas(c Candidate) float64 {
	if c.MaxReplicas <= 0 {
		return float64(c.Replicas + c.Placed)
	}
	return float64(c.Replicas+c.Placed) / float64(c.MaxReplicas)
}

// best returns the index of the lowest figure; ties go to the smaller ID.
func best(cands []Candidate, fig func(Candidate) float64) int {
	bi, bf := 0, fig(cands[0])
	for i := 1; i < len(cands); i++ {
		f := fig(cands[i])
		if f < bf || (f == bf && cands[i].ID < cands[bi].ID) {
			bi, bf = i, f
		}
	}
	return bi
}

// byID returns the indexes of cands sorted by ID.
func byID(cands []Candidate) []int {
	idx := make([]int, len(cands))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return cands[idx[a]].ID < cands[idx[b]].ID })
	return idx
}
