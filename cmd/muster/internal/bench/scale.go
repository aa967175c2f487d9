package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
)

// runScale fills the broker's registry with Services services offered by
// Hosts simulated attach managers (each service by a tenth of the hosts)
// and times the broker's attach decision.
func runScale(ctx context.Context, cfg Config) (*Result, error) {
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sys, err := startSystem(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer sys.close()
	nc, err := sys.connect("bench scale", auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, proto.AttachBucket)
	if err != nil {
		return nil, err
	}
	svc := func(i int) string { return fmt.Sprintf("SCALE/S%d/SVC", i) }
	groups := min(10, cfg.Hosts)
	var started runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&started)
	for h := 0; h < cfg.Hosts; h++ {
		ai := proto.AttachInfo{ID: fmt.Sprintf("sim-%03d", h), Host: "sim", Version: "bench", HeartbeatMS: 600000,
			Updated: time.Now().UnixMilli(), MaxReplicas: 64, Replicas: rand.IntN(64)}
		for i := h % groups; i < cfg.Services; i += groups {
			ai.Services = append(ai.Services, svc(i))
		}
		b, _ := json.Marshal(ai)
		if _, err := kv.Put(ctx, ai.ID, b); err != nil {
			return nil, err
		}
	}
	last := svc(cfg.Services - 1)
	if err := waitFor(ctx, 30*time.Second, func() bool {
		_, ok := sys.broker.ChooseAttach(last)
		return ok && len(sys.broker.Stats(ctx)) >= cfg.Services
	}); err != nil {
		return nil, fmt.Errorf("broker did not see every host: %w", err)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	const decisions = 20000
	lats := make([]time.Duration, 0, decisions)
	for i := 0; i < decisions; i++ {
		s := svc(rand.IntN(cfg.Services))
		t := time.Now()
		if _, ok := sys.broker.ChooseAttach(s); !ok {
			return nil, fmt.Errorf("no attach manager chosen for %s", s)
		}
		lats = append(lats, time.Since(t))
	}
	p99 := percentile(lats, 99)
	return &Result{
		Figures: []Figure{
			judge(Figure{Name: "attach decision p99", Unit: "µs", Muster: float64(p99) / 1e3, Target: "≤ 1000 µs"}, p99 <= time.Millisecond),
			{Name: "attach decision p50", Unit: "µs", Muster: float64(percentile(lats, 50)) / 1e3},
			{Name: "heap for the registry", Unit: "MiB", Muster: float64(int64(after.HeapAlloc)-int64(started.HeapAlloc)) / (1 << 20)},
			{Name: "heap in all (NATS server, broker)", Unit: "MiB", Muster: float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (1 << 20)},
		},
		Notes: []string{fmt.Sprintf("%d services, %d simulated attach managers, each service offered by %d of them; %d decisions", cfg.Services, cfg.Hosts, cfg.Hosts/groups, decisions),
			"heap figures include the in-process NATS server's copy of the records when NATS is embedded"},
	}, nil
}
