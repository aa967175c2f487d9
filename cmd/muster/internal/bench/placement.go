package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/musterhq/muster/internal/placement"
)

// runPlacement simulates a pool of cfg.Hosts hosts at 80% load for every
// placement scheme (internal/placement.Simulate: users arrive at random
// and stay a random time; hosts report their figures once per heartbeat,
// so the chooser sees them up to a heartbeat old) and reports the balance
// each reaches, max/mean users per host, beside random placement's (the
// baseline), and the time of one decision at cfg.Hosts hosts ×
// cfg.Services services. Targets: p2c max/mean ≤ 1.15; a decision under
// 50 µs.
func runPlacement(ctx context.Context, cfg Config) (*Result, error) {
	sim := placement.SimConfig{Hosts: cfg.Hosts, Load: 0.8, Arrivals: 100000, Seed: uint64(time.Now().UnixNano())}
	base := placement.Simulate(placement.Random, sim)
	res := &Result{Notes: []string{
		fmt.Sprintf("%d hosts of 100 users at 80%% load, %d arrivals, figures refreshed every 2%% of a mean stay; baseline: random placement", cfg.Hosts, sim.Arrivals),
		fmt.Sprintf("decision: %d hosts × %d services, every host offering every service (the worst case)", cfg.Hosts, cfg.Services),
	}}
	for _, s := range placement.Schemes {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r := base
		if s != placement.Random {
			r = placement.Simulate(s, sim)
		}
		f := Figure{Name: "max/mean users per host: " + string(s), Unit: "", Muster: r.MaxOverMean, Baseline: base.MaxOverMean}
		if base.MaxOverMean > 0 {
			f.Ratio = r.MaxOverMean / base.MaxOverMean
		}
		if s == placement.P2C {
			f.Target = "≤ 1.15"
			f = judge(f, r.MaxOverMean <= 1.15)
		}
		res.Figures = append(res.Figures, f)
		d := placement.DecisionTime(s, cfg.Hosts, cfg.Services, 20000, 1)
		res.Figures = append(res.Figures, judge(Figure{Name: "decision: " + string(s), Unit: "µs", Muster: float64(d) / 1e3, Target: "< 50 µs"}, d < 50*time.Microsecond))
	}
	return res, nil
}
