package attach

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/musterhq/muster/broker/proto"
)

// The phases of a replica's start, observed once per replica when the
// manager sees its registration (onReplicaRecord): a start that fails (not
// spawned, exits or times out before registering) is never observed; it
// counts in muster_attach_replica_start_failures_total instead.
//
//	exec      reserved (for a start the broker asked for: the notification
//	          received) → the process exec'd (state record, log file,
//	          credentials, fork/exec)
//	connect   → the replica's recorded start (proto.ReplicaInfo.Started,
//	          taken once it has connected to NATS; ms precision)
//	register  → its registration seen by the manager (the replica's
//	          JetStream look-ups, subscriptions and registration write, and
//	          the manager's watch delivering it)
//
// The total runs from reserved to registration seen.

// Phase label values of muster_attach_start_phase_seconds.
const (
	phaseExec     = "exec"
	phaseConnect  = "connect"
	phaseRegister = "register"
)

// startBuckets are the histogram buckets of start times, in seconds: half
// a millisecond to ten seconds (the broker's notification delay uses the
// same).
var startBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// startMetrics are the start histograms of one manager. Their series are
// labelled by service (configured, so bounded), never by replica.
type startMetrics struct {
	phase *prometheus.HistogramVec // service, phase
	total *prometheus.HistogramVec // service
}

// newStartMetrics makes the histograms of manager id. A service's series
// appear with its first start, not before: pre-made series at zero cost
// about 5 KiB of heap per configured service (four histograms of 15
// buckets), which `muster bench host` counts as growth with idle services
// (a rate over a service that never started reads nothing, not 0).
func newStartMetrics(id string) *startMetrics {
	labels := prometheus.Labels{"attach": id}
	sm := &startMetrics{
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "muster_attach_start_phase_seconds",
			Help:        "Time of each phase of a successful replica start: exec (reserved, for a start the broker asked for the notification received, → process exec'd), connect (→ the replica connected to NATS), register (→ its registration seen).",
			Buckets:     startBuckets,
			ConstLabels: labels,
		}, []string{"service", "phase"}),
		total: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "muster_attach_start_seconds",
			Help:        "Time from a replica reserved (for a start the broker asked for: the notification received) to its registration seen by the manager; failed starts are not observed.",
			Buckets:     startBuckets,
			ConstLabels: labels,
		}, []string{"service"}),
	}
	return sm
}

// observeStartLocked records the phases of replica r, whose first
// registration record info (decoded with err) the manager saw at seen.
// A replica the manager already stops for missing its start timeout is
// not a success and is not observed. The caller holds m.mu.
func (m *Manager) observeStartLocked(r *replicaRun, info proto.ReplicaInfo, err error, seen time.Time) {
	if (r.stopReason != "" && !r.quiesce) || r.spawned.IsZero() {
		return
	}
	svc := r.svc.cfg.Service
	m.starts.phase.WithLabelValues(svc, phaseExec).Observe(r.spawned.Sub(r.started).Seconds())
	if err == nil && info.Started > 0 {
		// The replica's clock is the host's, in whole ms: clamp the
		// rounding at zero.
		connected := time.UnixMilli(info.Started)
		m.starts.phase.WithLabelValues(svc, phaseConnect).Observe(max(connected.Sub(r.spawned), 0).Seconds())
		m.starts.phase.WithLabelValues(svc, phaseRegister).Observe(max(seen.Sub(connected), 0).Seconds())
	}
	m.starts.total.WithLabelValues(svc).Observe(seen.Sub(r.started).Seconds())
}
