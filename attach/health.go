package attach

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/health"
)

// HealthChecks are the checks that the manager can do its job, for
// `muster attach --http` (/healthz), named "attach.*": it runs, its connection is up,
// JetStream answers (one round trip to the attach bucket, bounded by the
// check's timeout), the host is not isolated and no service is failing.
func (m *Manager) HealthChecks() []health.Check {
	return []health.Check{
		{Name: "attach.running", Run: func(context.Context) (string, error) {
			m.mu.Lock()
			stopping := m.stopping
			m.mu.Unlock()
			if stopping {
				return "", errors.New("attach manager " + m.id + " is shutting down")
			}
			return "attach manager " + m.id + " running", nil
		}},
		health.NATS("attach", m.nc),
		{Name: "attach.jetstream", Run: func(ctx context.Context) (string, error) {
			if m.nc.Status() != nats.CONNECTED {
				return "", errors.New("not asked: not connected to NATS")
			}
			st, err := m.attKV.Status(ctx)
			if err != nil {
				return "", fmt.Errorf("attach bucket %s does not answer: %w", m.attKV.Bucket(), err)
			}
			return fmt.Sprintf("attach bucket %s answered (%d records)", st.Bucket(), st.Values()), nil
		}},
		{Name: "attach.isolated", Run: func(context.Context) (string, error) {
			m.mu.Lock()
			isolated := m.isolated
			m.mu.Unlock()
			if isolated {
				return "", errors.New("host " + m.id + " is isolated (maintenance): it starts no replicas")
			}
			return "not isolated", nil
		}},
		{Name: "attach.services", Run: func(context.Context) (string, error) {
			failing := m.failingServices()
			if len(failing) > 0 {
				return "", errors.New("failing: " + strings.Join(failing, "; "))
			}
			return fmt.Sprintf("%d services, none failing", len(m.cfg.Services)), nil
		}},
	}
}

// failingServices lists the failing services as "SERVICE (reason)", sorted.
func (m *Manager) failingServices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, s := range m.svcs {
		if s.failing != "" {
			out = append(out, name+" ("+s.failing+")")
		}
	}
	sort.Strings(out)
	return out
}
