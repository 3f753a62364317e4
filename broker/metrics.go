package broker

import (
	"sync"
	"time"

	"github.com/commy/commy/internal/ipc"
	"github.com/prometheus/client_golang/prometheus"
)

// OtherTenants is the tenant label under which the tenants past
// Config.MetricsTenants are summed. No tenant id can start with "_".
const OtherTenants = "_other"

// LatencyBuckets are the upper bounds, in seconds, of the request latency
// histogram: a request through the broker takes microseconds.
var LatencyBuckets = []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1}

// latency holds the request latency histograms, one per request type. A
// type's histogram is made at its first request, so a scrape shows only
// the types that were asked for. It is safe for concurrent use.
type latency struct {
	vec    *prometheus.HistogramVec
	byKind map[string]*kindLatency // built once: reading it needs no lock
}

type kindLatency struct {
	once sync.Once
	obs  prometheus.Observer
}

func newLatency() *latency {
	l := &latency{
		vec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "commy_request_duration_seconds",
			Help:    "Time from a request's frame being read to its reply being queued, by request type.",
			Buckets: LatencyBuckets,
		}, []string{"type"}),
		byKind: map[string]*kindLatency{unknownKind: {}},
	}
	for _, k := range ipc.Kinds() {
		l.byKind[k] = &kindLatency{}
	}
	return l
}

// observe records that a request of type kind took d.
func (l *latency) observe(kind string, d time.Duration) {
	k := l.byKind[kind]
	if k == nil {
		kind, k = unknownKind, l.byKind[unknownKind]
	}
	k.once.Do(func() { k.obs = l.vec.WithLabelValues(kind) })
	k.obs.Observe(d.Seconds())
}

// Descriptions of the metrics the broker's collector reads at scrape time.
var (
	descConnections = prometheus.NewDesc("commy_connections_open",
		"Connections being served.", nil, nil)
	descAccepted = prometheus.NewDesc("commy_connections_accepted_total",
		"Connections accepted and served.", nil, nil)
	descRejected = prometheus.NewDesc("commy_connections_rejected_total",
		"Connections closed at once because --max-connections were being served.", nil, nil)
	descRequests = prometheus.NewDesc("commy_requests_total",
		"Requests handled, by type and outcome: ok, or the error code of the reply.", []string{"type", "outcome"}, nil)
	descErrors = prometheus.NewDesc("commy_error_replies_total",
		"Error replies sent, by error code, including those that end a connection on a framing error.", []string{"code"}, nil)
	descBytesIn = prometheus.NewDesc("commy_received_bytes_total",
		"Bytes of the frames read from clients, length prefixes included.", nil, nil)
	descBytesOut = prometheus.NewDesc("commy_sent_bytes_total",
		"Bytes of the frames written to clients (replies and notices), length prefixes included.", nil, nil)
	descNoticesSent = prometheus.NewDesc("commy_notices_sent_total",
		"VariablesUpdated notices written to subscribers.", nil, nil)
	descNoticesMerged = prometheus.NewDesc("commy_notices_merged_total",
		"Notices merged into one still waiting for a slow subscriber.", nil, nil)
	descTenants = prometheus.NewDesc("commy_tenants",
		"Tenants.", nil, nil)
	descServices = prometheus.NewDesc("commy_services",
		"Services, by tenant.", []string{"tenant"}, nil)
	descVariables = prometheus.NewDesc("commy_variables",
		"Variables, by tenant.", []string{"tenant"}, nil)
	descFileBytes = prometheus.NewDesc("commy_service_file_bytes",
		"Sizes of the service files (what clients may map), by tenant.", []string{"tenant"}, nil)
	descAudit = prometheus.NewDesc("commy_audit_events_total",
		"Records queued for the audit log, by event.", []string{"event"}, nil)
	descAuditErrors = prometheus.NewDesc("commy_audit_write_errors_total",
		"Audit records lost because the log could not be written.", nil, nil)
	descReloads = prometheus.NewDesc("commy_policy_reloads_total",
		"Policy reloads, by result: ok (the new policy is in place) or error (the previous one was kept).", []string{"result"}, nil)
	descReloadOK = prometheus.NewDesc("commy_policy_last_reload_successful",
		"Whether the last policy reload succeeded (1) or failed and the previous policy is still in place (0).", nil, nil)
	descRecover = prometheus.NewDesc("commy_recover_errors_total",
		"Service files skipped at start because they could not be used.", nil, nil)
	descDamaged = prometheus.NewDesc("commy_service_files_damaged_total",
		"Service files found damaged at run time; their services are quarantined (SERVICE_DAMAGED).", nil, nil)
	descProbe = prometheus.NewDesc("commy_probe_active",
		"Whether the eBPF file-access probe is running (1), with the kernel function it is attached to.", []string{"attach_point"}, nil)
	descProbeEvents = prometheus.NewDesc("commy_probe_events_total",
		"File-access events read from the eBPF probe.", nil, nil)
	descProbeLost = prometheus.NewDesc("commy_probe_lost_total",
		"File-access events the eBPF probe lost because its ring buffer was full.", nil, nil)
)

var allDescs = []*prometheus.Desc{
	descConnections, descAccepted, descRejected, descRequests, descErrors, descBytesIn, descBytesOut,
	descNoticesSent, descNoticesMerged, descTenants, descServices, descVariables, descFileBytes,
	descAudit, descAuditErrors, descReloads, descReloadOK, descRecover, descDamaged, descProbe, descProbeEvents, descProbeLost,
}

// Collector returns a Prometheus collector of the broker's figures, read
// when it is scraped: the counters Stats reports, the tenants' services,
// variables and file sizes, the probe's state, and, with Config.Metrics, the
// request latency histograms. It is safe for concurrent use, and may be
// registered in several registries.
func (b *Broker) Collector() prometheus.Collector { return collector{b} }

type collector struct{ b *Broker }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
	for _, d := range limitDescs {
		ch <- d
	}
	if c.b.latency != nil {
		c.b.latency.vec.Describe(ch)
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	b, st := c.b, &c.b.stats
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	gauge(descConnections, float64(max(st.connections.Load(), 0)))
	counter(descAccepted, st.accepted.Load())
	counter(descRejected, st.rejected.Load())
	st.requestCounts(func(kind, outcome string, n uint64) { counter(descRequests, n, kind, outcome) })
	for code, n := range snapshot(st.errors) {
		counter(descErrors, n, code)
	}
	counter(descBytesIn, st.bytesIn.Load())
	counter(descBytesOut, st.bytesOut.Load())
	counter(descNoticesSent, st.noticesSent.Load())
	counter(descNoticesMerged, st.noticesMerged.Load())

	usage := b.usage()
	gauge(descTenants, float64(len(usage)))
	var other tenantUsage
	for i, u := range usage {
		if i >= b.cfg.MetricsTenants {
			other.services += u.services
			other.variables += u.variables
			other.fileBytes += u.fileBytes
			continue
		}
		gauge(descServices, float64(u.services), u.tenant)
		gauge(descVariables, float64(u.variables), u.tenant)
		gauge(descFileBytes, float64(u.fileBytes), u.tenant)
	}
	if len(usage) > max(b.cfg.MetricsTenants, 0) {
		gauge(descServices, float64(other.services), OtherTenants)
		gauge(descVariables, float64(other.variables), OtherTenants)
		gauge(descFileBytes, float64(other.fileBytes), OtherTenants)
	}

	for _, e := range auditEvents {
		counter(descAudit, st.audit[e].Load(), e)
	}
	counter(descAuditErrors, b.audit.Errors())
	counter(descReloads, st.reloads.Load(), "ok")
	counter(descReloads, st.reloadErrors.Load(), "error")
	ok := 1.0
	if st.reloadFailing.Load() {
		ok = 0
	}
	gauge(descReloadOK, ok)
	counter(descRecover, st.recoverErrors.Load())
	counter(descDamaged, st.damaged.Load())

	var ps ProbeStatus
	active := 0.0
	if p := b.cfg.Probe; p != nil {
		ps, active = p.Status(), 1
	}
	gauge(descProbe, active, ps.AttachPoint)
	counter(descProbeEvents, st.probeEvents.Load())
	counter(descProbeLost, ps.Lost)

	b.collectLimits(gauge, counter)

	if b.latency != nil {
		b.latency.vec.Collect(ch)
	}
}
