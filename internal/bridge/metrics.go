package bridge

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// stats are the bridge's Prometheus metrics. They are safe for concurrent
// use.
type stats struct {
	lag        prometheus.Histogram
	pending    prometheus.Gauge
	pendingB   prometheus.Gauge
	conflicts  prometheus.Counter
	connected  prometheus.Gauge
	published  prometheus.Counter
	applied    prometheus.Counter
	refused    *prometheus.CounterVec
	outboxFull *prometheus.CounterVec
	split      prometheus.Counter
	lastSeq    prometheus.Gauge
	applyErrs  prometheus.Counter
}

func newStats() *stats {
	return &stats{
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "commy_bridge_replication_lag_seconds",
			Help:    "Time from the origin bridge reading a change to this bridge applying it (clocks of two hosts).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}),
		pending:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "commy_bridge_pending_batches", Help: "Local batches not yet acknowledged by JetStream."}),
		pendingB:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "commy_bridge_pending_bytes", Help: "Bytes of the local batches not yet acknowledged by JetStream."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "commy_bridge_conflicts_resolved_total", Help: "Remote values not applied because a later write of this host is on its way (last writer wins)."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "commy_bridge_nats_connected", Help: "1 while the connection to NATS is up, else 0."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "commy_bridge_published_batches_total", Help: "Local batches acknowledged by JetStream."}),
		applied:   prometheus.NewCounter(prometheus.CounterOpts{Name: "commy_bridge_applied_batches_total", Help: "Remote batches applied through the local broker."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "commy_bridge_refused_values_total",
			Help: "Values not replicated: too_large (over the NATS message limit, not sent) or rejected (the local broker refused a remote value).",
		}, []string{"reason"}),
		outboxFull: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "commy_bridge_outbox_full_total",
			Help: "Times the bound on pending batches was hit: merged (batches merged per service) or paused (local changes left with the broker).",
		}, []string{"action"}),
		split:     prometheus.NewCounter(prometheus.CounterOpts{Name: "commy_bridge_batches_split_total", Help: "Local batches larger than the NATS message limit, sent as several messages."}),
		lastSeq:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "commy_bridge_applied_sequence", Help: "The last stream sequence this bridge has processed."}),
		applyErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "commy_bridge_apply_errors_total", Help: "Remote batches the local broker refused (permission, name or space), logged and skipped."}),
	}
}

func (s *stats) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.lag, s.pending, s.pendingB, s.conflicts, s.connected, s.published, s.applied, s.refused, s.outboxFull, s.split, s.lastSeq, s.applyErrs}
}

// Describe implements prometheus.Collector.
func (b *Bridge) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range b.stats.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (b *Bridge) Collect(ch chan<- prometheus.Metric) {
	for _, c := range b.stats.collectors() {
		c.Collect(ch)
	}
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) uint64 {
	var d dto.Metric
	if m.Write(&d) != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return uint64(d.Counter.GetValue())
	case d.Gauge != nil:
		return uint64(d.Gauge.GetValue())
	}
	return 0
}

// refusedTotal sums the refused values of every reason.
func (s *stats) refusedTotal() uint64 {
	return metricValue(s.refused.WithLabelValues("too_large")) + metricValue(s.refused.WithLabelValues("rejected"))
}
