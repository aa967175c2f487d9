package broker

import (
	"context"
	"errors"

	"github.com/musterhq/muster/internal/health"
)

// HealthChecks are the checks that the broker can do its job, for
// `muster broker --http` (/healthz), named "broker.*": it runs, its connection is up, and its
// view of the registrations is current (both buckets followed, so
// JetStream answers). Each is instant: it reads state the broker keeps.
func (b *Broker) HealthChecks() []health.Check {
	return []health.Check{
		{Name: "broker.running", Run: func(context.Context) (string, error) {
			if b.runCtx.Err() != nil {
				return "", errors.New("broker " + b.cfg.ID + " is shutting down")
			}
			return "broker " + b.cfg.ID + " running", nil
		}},
		health.NATS("broker", b.nc),
		{Name: "broker.registry", Run: func(context.Context) (string, error) {
			if !b.reg.current() {
				return "", errors.New("registry view not current: the replica and attach buckets are not followed (JetStream unavailable or catching up)")
			}
			return "replica and attach buckets followed", nil
		}},
	}
}
