package broker

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/musterhq/muster/broker/proto"
)

// scrapeTimeout bounds the one JetStream round trip of a scrape (the
// queue stream's pending counts per service).
const scrapeTimeout = time.Second

// Collector returns a Prometheus collector of the broker's figures per
// service (the figures of Stats), read when scraped, and the histogram of
// its notification delays (newNotifyDelay), the only figure it keeps for
// metrics alone. Every metric has the label broker (the broker's id);
// docs/OPERATIONS.md lists them.
func (b *Broker) Collector() prometheus.Collector {
	c := &collector{b: b}
	labels := prometheus.Labels{"broker": b.cfg.ID}
	svc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"service"}, labels)
	}
	c.registryCurrent = prometheus.NewDesc("muster_broker_registry_current",
		"1 when the broker's view of the replica and attach registrations is current, 0 while it is not (NATS or JetStream unavailable).", nil, labels)
	c.queueReadable = prometheus.NewDesc("muster_broker_queue_readable",
		"1 when the queue stream answered at this scrape, 0 when not (the pending figures are then absent).", nil, labels)
	c.perService = []serviceMetric{
		{svc("muster_broker_replicas", "Registered replicas of the service that take work (quiescing ones not counted)."), prometheus.GaugeValue,
			func(s proto.ServiceStats) float64 { return float64(s.Replicas) }},
		{svc("muster_broker_quiescing_replicas", "Registered replicas of the service that are quiescing (finishing their work, taking no new)."), prometheus.GaugeValue,
			func(s proto.ServiceStats) float64 { return float64(s.Quiescing) }},
		{svc("muster_broker_standby_replicas", "Standby replicas of the service: started and parked, serving nothing until work arrives (in no other figure)."), prometheus.GaugeValue,
			func(s proto.ServiceStats) float64 { return float64(s.Standby) }},
		{svc("muster_broker_capacity", "Conversations the service's replicas that take work can hold at once (the sum of their capacities)."), prometheus.GaugeValue,
			func(s proto.ServiceStats) float64 { return float64(s.Capacity) }},
		{svc("muster_broker_active_conversations", "Conversations (calls included) open now at the service's replicas."), prometheus.GaugeValue,
			func(s proto.ServiceStats) float64 { return float64(s.Active) }},
		{svc("muster_broker_active_conversations_high_water", "Most conversations seen open at once since the broker started (sampled when its figures are read)."), prometheus.GaugeValue,
			func(s proto.ServiceStats) float64 { return float64(s.ActiveHigh) }},
		{svc("muster_broker_missing_replicas", "Requests queued since the broker's last attach notification for the service."), prometheus.GaugeValue,
			func(s proto.ServiceStats) float64 { return float64(s.Missing) }},
		{svc("muster_broker_requests_queued_total", "Requests the broker queued for the service (no replica could take them at once)."), prometheus.CounterValue,
			func(s proto.ServiceStats) float64 { return float64(s.TotalRequests) }},
		{svc("muster_broker_server_occupied_total", "Requests queued while replicas of the service were registered but all busy (EntireX SERVER-OCCUPIED)."), prometheus.CounterValue,
			func(s proto.ServiceStats) float64 { return float64(s.ServerOccupied) }},
		{svc("muster_broker_failed_requests_total", "Queued requests the broker answered 0900/0004 because the service is failing."), prometheus.CounterValue,
			func(s proto.ServiceStats) float64 { return float64(s.Failed) }},
		{svc("muster_broker_notifications_total", "Attach notifications the broker sent for the service."), prometheus.CounterValue,
			func(s proto.ServiceStats) float64 { return float64(s.Notifications) }},
	}
	c.pending = svc("muster_broker_pending_requests", "Requests of the service waiting in the queue stream now.")
	c.pendingHigh = svc("muster_broker_pending_requests_high_water", "Most requests seen waiting in the queue at once since the broker started (sampled when its figures are read).")
	c.lastNotified = svc("muster_broker_last_notification_timestamp_seconds", "When the broker last sent an attach notification for the service (Unix time; absent if never).")
	return c
}

// delayBuckets are the buckets of the notification delay, in seconds:
// half a millisecond to ten seconds, as the attach manager's start phases.
var delayBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// newNotifyDelay makes the histogram of the time from the first request
// queued since a service's last notification (by this broker, or by
// another whose hint reached it) to the next notification sent to an
// attach manager: what the leading broker adds to a cold start before a
// manager hears of it (the queue-depth look-up included). Only the leader
// observes it; re-notifications while the same work waits are not
// observed, nor notifications that found the work already taken.
//
// The time a request then waits in the queue until a replica takes it is
// not observed here: the replica pulls it from JetStream without the
// broker, which would need a message per request to learn of it.
func newNotifyDelay(id string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "muster_broker_notify_delay_seconds",
		Help:        "Time from the first request queued for the service since its last attach notification (or that request's hint from another broker) to the next notification sent to an attach manager.",
		Buckets:     delayBuckets,
		ConstLabels: prometheus.Labels{"broker": id},
	}, []string{"service"})
}

// serviceMetric is one per-service metric and how to read it.
type serviceMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(proto.ServiceStats) float64
}

type collector struct {
	b                              *Broker
	registryCurrent, queueReadable *prometheus.Desc
	perService                     []serviceMetric
	pending, pendingHigh           *prometheus.Desc
	lastNotified                   *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.registryCurrent
	ch <- c.queueReadable
	for _, g := range c.perService {
		ch <- g.desc
	}
	ch <- c.pending
	ch <- c.pendingHigh
	ch <- c.lastNotified
	c.b.notifyDelay.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(c.b.runCtx, scrapeTimeout)
	defer cancel()
	stats, perr := c.b.stats(ctx)
	ch <- prometheus.MustNewConstMetric(c.registryCurrent, prometheus.GaugeValue, b2f(c.b.reg.current()))
	ch <- prometheus.MustNewConstMetric(c.queueReadable, prometheus.GaugeValue, b2f(perr == nil))
	for _, s := range stats {
		for _, g := range c.perService {
			ch <- prometheus.MustNewConstMetric(g.desc, g.kind, g.value(s), s.Service)
		}
		if perr == nil {
			ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.Pending), s.Service)
		}
		ch <- prometheus.MustNewConstMetric(c.pendingHigh, prometheus.GaugeValue, float64(s.PendingHigh), s.Service)
		if s.LastNotifiedMS > 0 {
			ch <- prometheus.MustNewConstMetric(c.lastNotified, prometheus.GaugeValue, float64(s.LastNotifiedMS)/1000, s.Service)
		}
	}
	c.b.notifyDelay.Collect(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
