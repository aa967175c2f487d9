package attach

import (
	"github.com/musterhq/muster/broker/proto"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the manager's figures: its
// host's (those of its registration, Info) and its counters per service
// (Counters), read when scraped, and the histograms of its replicas'
// start phases (phases.go), the only figures it keeps for metrics alone.
// Every metric has the label attach (the manager's id);
// docs/OPERATIONS.md lists them.
func (m *Manager) Collector() prometheus.Collector {
	labels := prometheus.Labels{"attach": m.id}
	host := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, labels) }
	svc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"service"}, labels)
	}
	c := &collector{
		m:            m,
		replicas:     host("muster_attach_replicas", "Replica processes the manager runs or is starting."),
		starting:     host("muster_attach_starting_replicas", "Replica processes started but not yet registered."),
		maxReplicas:  host("muster_attach_max_replicas", "The most replicas the host may run (host.max_replicas)."),
		isolated:     host("muster_attach_isolated", "1 while the host is isolated (maintenance: it starts nothing), else 0."),
		failingCount: host("muster_attach_failing_services", "Services the manager reports failing (their replicas cannot start)."),
		cpu:          host("muster_attach_host_cpu_ratio", "Share of the host's CPU time busy (0–1) since the previous reading (a heartbeat or a scrape)."),
		load1:        host("muster_attach_host_load1", "The host's 1-minute load average."),
		memFree:      host("muster_attach_host_memory_available_bytes", "Memory available on the host for new processes."),
		memTotal:     host("muster_attach_host_memory_total_bytes", "The host's total memory."),
		users:        host("muster_attach_users", "Open calls and conversations of the host's replicas."),
		maxUsers:     host("muster_attach_max_users", "Calls and conversations the host allows at once (host.max_users)."),
		eventsRate:   host("muster_attach_events_per_second", "Messages the host's replicas received per second, over the last heartbeat."),
		bytesRate:    host("muster_attach_bandwidth_bytes_per_second", "Bytes the host's replicas received and sent per second, over the last heartbeat."),
		replica: func(name, help string) *prometheus.Desc {
			return prometheus.NewDesc(name, help, []string{"service", "replica"}, labels)
		},
		failing: svc("muster_attach_service_failing", "1 while the service is failing (its replicas crash before registering or do not register in time), else 0."),
		counters: []serviceCounter{
			{svc("muster_attach_replicas_started_total", "Replicas of the service started (processes spawned)."), prometheus.CounterValue,
				func(c ServiceCounters) float64 { return float64(c.Started) }},
			{svc("muster_attach_replica_start_failures_total", "Replicas of the service that failed to start: not spawned, or exited or timed out before registering."), prometheus.CounterValue,
				func(c ServiceCounters) float64 { return float64(c.StartFailed) }},
			{svc("muster_attach_replicas_crashed_total", "Replicas of the service that ended abnormally after registering (non-zero exit or signal)."), prometheus.CounterValue,
				func(c ServiceCounters) float64 { return float64(c.Crashed) }},
			{svc("muster_attach_replicas_hung_total", "Replicas of the service stopped because they stopped heartbeating and answered no PING."), prometheus.CounterValue,
				func(c ServiceCounters) float64 { return float64(c.Hung) }},
			{svc("muster_attach_replicas_exited_total", "Replicas of the service that ended (any way)."), prometheus.CounterValue,
				func(c ServiceCounters) float64 { return float64(c.Exited) }},
			{svc("muster_attach_replica_pings_total", "PINGs sent to replicas of the service whose heartbeats looked stale."), prometheus.CounterValue,
				func(c ServiceCounters) float64 { return float64(c.Pinged) }},
			{svc("muster_attach_notifications_fenced_total", "Notifications ignored because they came from a deposed leading broker (an older lease epoch)."), prometheus.CounterValue,
				func(c ServiceCounters) float64 { return float64(c.Fenced) }},
			{svc("muster_attach_replicas_high_water", "Most replicas of the service alive (starting or running) at once since the manager started."), prometheus.GaugeValue,
				func(c ServiceCounters) float64 { return float64(c.HighWater) }},
		},
	}
	c.describeMore()
	return c
}

// serviceCounter is one per-service metric and how to read it.
type serviceCounter struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(ServiceCounters) float64
}

type collector struct {
	m                                      *Manager
	users, maxUsers, eventsRate, bytesRate *prometheus.Desc
	replica                                func(name, help string) *prometheus.Desc
	repDescs                               []replicaMetric
	svcTraffic                             []trafficMetric
	replicas, starting, maxReplicas        *prometheus.Desc
	isolated, failingCount                 *prometheus.Desc
	cpu, load1, memFree, memTotal, failing *prometheus.Desc
	counters                               []serviceCounter
}

// replicaMetric is one per-replica metric and how to read it.
type replicaMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(replicaFigure) float64
}

// trafficMetric is one per-service traffic counter (live and retired
// replicas of this host).
type trafficMetric struct {
	desc  *prometheus.Desc
	value func(proto.Stats) float64
}

// describeMore builds the per-replica and per-service traffic metrics.
func (c *collector) describeMore() {
	labels := prometheus.Labels{"attach": c.m.id}
	svc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"service"}, labels)
	}
	c.repDescs = []replicaMetric{
		{c.replica("muster_replica_active", "Open calls and conversations of the replica."), prometheus.GaugeValue,
			func(r replicaFigure) float64 { return float64(r.active) }},
		{c.replica("muster_replica_requests_total", "Calls and conversations the replica took (warm and queued)."), prometheus.CounterValue,
			func(r replicaFigure) float64 { return float64(r.stats.Conversations) }},
		{c.replica("muster_replica_events_total", "Messages the replica received."), prometheus.CounterValue,
			func(r replicaFigure) float64 { return float64(r.stats.Messages) }},
		{c.replica("muster_replica_received_bytes_total", "Request bytes the replica received."), prometheus.CounterValue,
			func(r replicaFigure) float64 { return float64(r.stats.BytesIn) }},
		{c.replica("muster_replica_sent_bytes_total", "Reply bytes the replica sent."), prometheus.CounterValue,
			func(r replicaFigure) float64 { return float64(r.stats.BytesOut) }},
		{c.replica("muster_replica_processing_seconds_total", "Time the replica's handlers spent."), prometheus.CounterValue,
			func(r replicaFigure) float64 { return float64(r.stats.ProcessingNS) / 1e9 }},
		{c.replica("muster_replica_cpu_ratio", "The replica process's CPU use over the last heartbeat (1 = one core)."), prometheus.GaugeValue,
			func(r replicaFigure) float64 { return r.cpuPercent / 100 }},
		{c.replica("muster_replica_resident_memory_bytes", "The replica process's resident memory."), prometheus.GaugeValue,
			func(r replicaFigure) float64 { return float64(r.rss) }},
	}
	c.svcTraffic = []trafficMetric{
		{svc("muster_attach_service_requests_total", "Calls and conversations the host's replicas of the service took, live and exited."),
			func(s proto.Stats) float64 { return float64(s.Conversations) }},
		{svc("muster_attach_service_warm_requests_total", "Of those, the ones taken straight from the warm subject (not queued)."),
			func(s proto.Stats) float64 { return float64(s.Warm()) }},
		{svc("muster_attach_service_events_total", "Messages the host's replicas of the service received, live and exited."),
			func(s proto.Stats) float64 { return float64(s.Messages) }},
		{svc("muster_attach_service_received_bytes_total", "Request bytes the host's replicas of the service received."),
			func(s proto.Stats) float64 { return float64(s.BytesIn) }},
		{svc("muster_attach_service_sent_bytes_total", "Reply bytes the host's replicas of the service sent."),
			func(s proto.Stats) float64 { return float64(s.BytesOut) }},
		{svc("muster_attach_service_processing_seconds_total", "Time the handlers of the host's replicas of the service spent."),
			func(s proto.Stats) float64 { return float64(s.ProcessingNS) / 1e9 }},
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.replicas, c.starting, c.maxReplicas, c.isolated, c.failingCount,
		c.cpu, c.load1, c.memFree, c.memTotal, c.failing, c.users, c.maxUsers, c.eventsRate, c.bytesRate} {
		ch <- d
	}
	for _, s := range c.counters {
		ch <- s.desc
	}
	for _, r := range c.repDescs {
		ch <- r.desc
	}
	for _, t := range c.svcTraffic {
		ch <- t.desc
	}
	c.m.starts.phase.Describe(ch)
	c.m.starts.total.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ai := c.m.Info()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.replicas, float64(ai.Replicas))
	gauge(c.starting, float64(ai.Starting))
	gauge(c.maxReplicas, float64(ai.MaxReplicas))
	gauge(c.isolated, b2f(ai.Isolated))
	gauge(c.failingCount, float64(len(ai.Failing)))
	gauge(c.cpu, ai.CPUPercent/100)
	gauge(c.load1, ai.Load1)
	gauge(c.memFree, float64(ai.MemFree))
	gauge(c.memTotal, float64(ai.MemTotal))
	gauge(c.users, float64(ai.Users))
	gauge(c.maxUsers, float64(ai.MaxUsers))
	gauge(c.eventsRate, ai.EventsPerSec)
	gauge(c.bytesRate, ai.BytesPerSec)
	reps, totals := c.m.replicaFigures()
	for _, r := range reps {
		for _, d := range c.repDescs {
			ch <- prometheus.MustNewConstMetric(d.desc, d.kind, d.value(r), r.service, r.id)
		}
	}
	for svc, st := range totals {
		for _, t := range c.svcTraffic {
			ch <- prometheus.MustNewConstMetric(t.desc, prometheus.CounterValue, t.value(st), svc)
		}
	}
	for _, svc := range ai.Services {
		gauge(c.failing, b2f(ai.Failing[svc] != ""), svc)
	}
	for svc, counts := range c.m.Counters() {
		for _, s := range c.counters {
			ch <- prometheus.MustNewConstMetric(s.desc, s.kind, s.value(counts), svc)
		}
	}
	c.m.starts.phase.Collect(ch)
	c.m.starts.total.Collect(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
