package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/musterhq/muster/attach"
)

// storm makes n concurrent calls and returns errors, lost (wrong or empty
// replies) and the time until all were answered.
func storm(ctx context.Context, mg *managed, n int) (errs, lost int64, took time.Duration, firstErr error) {
	var wg sync.WaitGroup
	var e, l atomic.Int64
	var once sync.Once
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			want := strconv.Itoa(i)
			got, err := mg.cli.Call(c, mg.service, []byte(want))
			switch {
			case err != nil:
				e.Add(1)
				once.Do(func() { firstErr = err })
			case string(got) != want:
				l.Add(1)
			}
		}(i)
	}
	wg.Wait()
	return e.Load(), l.Load(), time.Since(start), firstErr
}

func runBurst(ctx context.Context, cfg Config) (*Result, error) {
	mg, err := startManaged(ctx, cfg, "BURST", func(s *attach.ServiceConfig) {
		s.Max, s.Capacity, s.IdleTimeout = cfg.MaxReplicas, 1, cfg.IdleTimeout
	})
	if err != nil {
		return nil, err
	}
	defer mg.close()
	errs, lost, took, firstErr := storm(ctx, mg, cfg.Burst)
	c := mg.m.Counters()[mg.service]
	res := &Result{
		Figures: []Figure{
			judge(Figure{Name: "errors", Unit: "calls", Muster: float64(errs), Target: "0"}, errs == 0),
			judge(Figure{Name: "lost", Unit: "calls", Muster: float64(lost), Target: "0"}, lost == 0),
			judge(Figure{Name: "replicas alive at most", Unit: "", Muster: float64(c.HighWater), Target: fmt.Sprintf("≤ %d", cfg.MaxReplicas)}, c.HighWater <= cfg.MaxReplicas && c.HighWater > 0),
			{Name: "time until all answered", Unit: "ms", Muster: ms(took)},
			{Name: "replicas started", Unit: "", Muster: float64(c.Started)},
			{Name: "replicas started per second", Unit: "/s", Muster: float64(c.Started) / took.Seconds()},
		},
		Notes: []string{fmt.Sprintf("%d concurrent calls at zero replicas, max %d replicas of capacity 1", cfg.Burst, cfg.MaxReplicas)},
	}
	if firstErr != nil {
		res.Notes = append(res.Notes, "first error: "+firstErr.Error())
	}
	return res, nil
}

func runIdle(ctx context.Context, cfg Config) (*Result, error) {
	mg, err := startManaged(ctx, cfg, "IDLE", func(s *attach.ServiceConfig) {
		s.Max, s.Capacity, s.IdleTimeout = min(cfg.MaxReplicas, 8), 1, cfg.IdleTimeout
	})
	if err != nil {
		return nil, err
	}
	defer mg.close()
	if errs, _, _, firstErr := storm(ctx, mg, 200); errs > 0 {
		return nil, fmt.Errorf("load: %d errors, first: %v", errs, firstErr)
	}
	stopped := time.Now()
	alive := mg.m.Info().Replicas
	limit := cfg.IdleTimeout + cfg.IdleTimeout/5
	err = waitFor(ctx, 3*limit+10*time.Second, func() bool { return mg.m.Info().Replicas == 0 })
	gone := time.Since(stopped)
	if err != nil {
		gone = -1
	}
	records, dirs := mg.leftovers()
	return &Result{
		Figures: []Figure{
			judge(Figure{Name: "all replicas gone after", Unit: "ms", Muster: ms(gone), Target: fmt.Sprintf("≤ %v (idle timeout + 20%%)", limit)}, gone >= 0 && gone <= limit),
			judge(Figure{Name: "replica processes left", Muster: float64(records), Target: "0"}, records == 0),
			judge(Figure{Name: "temp dirs left", Muster: float64(dirs), Target: "0"}, dirs == 0),
		},
		Notes: []string{fmt.Sprintf("200 concurrent calls spun up %d replicas (max %d), idle timeout %v; then no load", alive, min(cfg.MaxReplicas, 8), cfg.IdleTimeout)},
	}, nil
}
