package broker

import (
	"strconv"

	"github.com/commy/commy/internal/ipc"
	"github.com/prometheus/client_golang/prometheus"
)

// limitUsage lists every resource's use against its limit: the broker's,
// each connected uid's and each tenant's.
func (b *Broker) limitUsage() []ipc.LimitUsage {
	lim := func(v int64) int64 {
		if v <= 0 {
			return -1
		}
		return v
	}
	open, fdLimit, reserve := b.FDUsage()
	tenants, shm, maxShm := b.Tenants()
	b.smu.Lock()
	conns := len(b.sessions)
	b.smu.Unlock()
	users := b.Users()
	out := []ipc.LimitUsage{
		{Scope: "broker", Limit: limitConnections, Used: int64(conns), Max: int64(b.cfg.MaxConnections), Refused: b.stats.rejected.Load()},
		{Scope: "broker", Limit: limitDescriptors, Used: open, Max: fdLimit - reserve, Refused: b.stats.fdRefused.Load()},
		{Scope: "broker", Limit: limitTotalShm, Used: shm, Max: lim(maxShm)},
	}
	for _, u := range users {
		id := strconv.FormatUint(uint64(u.UID), 10)
		for _, l := range []struct {
			name      string
			used, max int64
		}{
			{limitConnections, u.Connections, u.MaxConnections}, {limitBuffered, u.BufferedBytes, u.MaxBuffered},
			{limitSubscriptions, u.Subscriptions, u.MaxSubs}, {limitFilterNames, u.FilterNames, u.MaxFilterNames},
		} {
			out = append(out, ipc.LimitUsage{Scope: "uid", ID: id, Limit: l.name, Used: l.used, Max: lim(l.max), Refused: u.Refused[l.name]})
		}
	}
	for _, t := range tenants {
		for _, l := range []struct {
			name      string
			used, max int64
		}{
			{limitServices, t.Services, t.MaxServices}, {limitVariables, t.Variables, t.MaxVars}, {limitShmBytes, t.ShmBytes, t.MaxShm},
		} {
			max := l.max
			if max < 0 {
				max = -1
			}
			out = append(out, ipc.LimitUsage{Scope: "tenant", ID: t.Tenant, Limit: l.name, Used: l.used, Max: max, Refused: t.Refused[l.name]})
		}
	}
	return out
}

// OtherUIDs is the uid label under which the uids past the first
// metricsUIDs (by uid) are summed.
const OtherUIDs = "_other"

const metricsUIDs = 16

var (
	descUIDUsage = prometheus.NewDesc("commy_uid_usage",
		"What connected uids hold, by limit; uids past the first 16 are summed under uid=\"_other\".", []string{"uid", "limit"}, nil)
	descUIDLimit = prometheus.NewDesc("commy_uid_limit",
		"The per-uid limits of unprivileged uids (absent: no limit).", []string{"limit"}, nil)
	descTenantUsage = prometheus.NewDesc("commy_tenant_usage",
		"What tenants hold against their quotas, by limit, labelled like commy_services.", []string{"tenant", "limit"}, nil)
	descTenantLimit = prometheus.NewDesc("commy_tenant_limit",
		"Tenants' quotas, by limit (absent: no limit).", []string{"tenant", "limit"}, nil)
	descQuotaRefused = prometheus.NewDesc("commy_quota_refusals_total",
		"Requests and connections refused with QUOTA_EXCEEDED, by the limit hit.", []string{"limit"}, nil)
	descShmReserved = prometheus.NewDesc("commy_shm_reserved_bytes",
		"Shared memory reserved by every service file.", nil, nil)
	descShmLimit = prometheus.NewDesc("commy_shm_reserved_bytes_limit",
		"The broker's total_shm_bytes (absent: no limit).", nil, nil)
	descFDsOpen = prometheus.NewDesc("commy_descriptors_open",
		"The broker's estimate of its open descriptors: those at start, one per connection and one per service file.", nil, nil)
	descFDsLimit = prometheus.NewDesc("commy_descriptors_limit",
		"The broker's RLIMIT_NOFILE.", nil, nil)
	descFDsReserve = prometheus.NewDesc("commy_descriptors_reserve",
		"Descriptors new services may not take (--fd-reserve).", nil, nil)
	descSuppressed = prometheus.NewDesc("commy_audit_denials_suppressed_total",
		"Denials not recorded one by one, counted in suppressed summaries instead.", nil, nil)
	descStrictRefused = prometheus.NewDesc("commy_audit_strict_refusals_total",
		"Requests refused because the audit log could not be written (--audit-strict).", nil, nil)
)

var limitDescs = []*prometheus.Desc{descUIDUsage, descUIDLimit, descTenantUsage, descTenantLimit, descQuotaRefused,
	descShmReserved, descShmLimit, descFDsOpen, descFDsLimit, descFDsReserve, descSuppressed, descStrictRefused}

// collectLimits sends the resource metrics.
func (b *Broker) collectLimits(gauge func(*prometheus.Desc, float64, ...string), counter func(*prometheus.Desc, uint64, ...string)) {
	userLimits := []string{limitConnections, limitBuffered, limitSubscriptions, limitFilterNames}
	other := map[string]int64{}
	users := b.Users()
	for i, u := range users {
		vals := []int64{u.Connections, u.BufferedBytes, u.Subscriptions, u.FilterNames}
		for j, l := range userLimits {
			if i < metricsUIDs {
				gauge(descUIDUsage, float64(vals[j]), strconv.FormatUint(uint64(u.UID), 10), l)
			} else {
				other[l] += vals[j]
			}
		}
	}
	if len(users) > metricsUIDs {
		for _, l := range userLimits {
			gauge(descUIDUsage, float64(other[l]), OtherUIDs, l)
		}
	}
	for l, v := range map[string]int64{limitConnections: b.users.lim.conns, limitBuffered: b.users.lim.buffered,
		limitSubscriptions: b.users.lim.subs, limitFilterNames: b.users.lim.names} {
		if v > 0 {
			gauge(descUIDLimit, float64(v), l)
		}
	}

	tenants, shm, maxShm := b.Tenants()
	tenantLimits := []string{limitServices, limitVariables, limitShmBytes}
	clear(other)
	for i, t := range tenants {
		vals := []int64{t.Services, t.Variables, t.ShmBytes}
		maxes := []int64{t.MaxServices, t.MaxVars, t.MaxShm}
		for j, l := range tenantLimits {
			if i < b.cfg.MetricsTenants {
				gauge(descTenantUsage, float64(vals[j]), t.Tenant, l)
				if maxes[j] >= 0 {
					gauge(descTenantLimit, float64(maxes[j]), t.Tenant, l)
				}
			} else {
				other[l] += vals[j]
			}
		}
	}
	if len(tenants) > max(b.cfg.MetricsTenants, 0) {
		for _, l := range tenantLimits {
			gauge(descTenantUsage, float64(other[l]), OtherTenants, l)
		}
	}
	gauge(descShmReserved, float64(shm))
	if maxShm >= 0 {
		gauge(descShmLimit, float64(maxShm))
	}

	refused := map[string]uint64{limitDescriptors: b.stats.fdRefused.Load()}
	b.users.mu.Lock()
	for l, n := range b.users.refusedTotal {
		refused[l] += n
	}
	b.users.mu.Unlock()
	b.quota.mu.Lock()
	for l, n := range b.quota.refused {
		refused[l] += n
	}
	b.quota.mu.Unlock()
	for _, l := range []string{limitConnections, limitBuffered, limitSubscriptions, limitFilterNames,
		limitServices, limitVariables, limitShmBytes, limitTotalShm, limitDescriptors} {
		counter(descQuotaRefused, refused[l], l)
	}
	open, limit, reserve := b.FDUsage()
	gauge(descFDsOpen, float64(open))
	gauge(descFDsLimit, float64(limit))
	gauge(descFDsReserve, float64(reserve))
	counter(descSuppressed, b.stats.suppressed.Load())
	counter(descStrictRefused, b.stats.auditRefused.Load())
}
