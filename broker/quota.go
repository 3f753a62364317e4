package broker

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/commy/commy/internal/ipc"
)

// Per-tenant and broker-wide defaults, used for every key the policy file's
// [limits] table leaves out (see docs/security.md, "Resources").
const (
	DefaultTenantServices  = 1024
	DefaultTenantVariables = 65536
	DefaultTenantShmBytes  = 4 << 30
	DefaultTotalShmBytes   = 16 << 30
)

// Limits a tenant or the broker can hit.
const (
	limitServices  = "services"
	limitVariables = "variables"
	limitShmBytes  = "shm_bytes"
	limitTotalShm  = "total_shm_bytes"
)

// TenantQuota is what one tenant may hold. A negative value means no limit.
type TenantQuota struct {
	Services  int64
	Variables int64
	ShmBytes  int64 // bytes of shared memory reserved for its service files, both backends
}

// Quotas are the per-tenant limits and the broker's total, from the policy
// file's [limits] table.
type Quotas struct {
	Default       TenantQuota
	Tenants       map[string]TenantQuota // overrides by tenant id
	TotalShmBytes int64                  // all tenants together; negative: no limit
}

// DefaultQuotas are the quotas without a [limits] table.
func DefaultQuotas() Quotas {
	return Quotas{
		Default:       TenantQuota{Services: DefaultTenantServices, Variables: DefaultTenantVariables, ShmBytes: DefaultTenantShmBytes},
		TotalShmBytes: DefaultTotalShmBytes,
	}
}

// For is the quota of tenant.
func (q Quotas) For(tenant string) TenantQuota {
	if t, ok := q.Tenants[tenant]; ok {
		return t
	}
	return q.Default
}

// limitsFile is the [limits] table of the policy file.
type limitsFile struct {
	Services      *int64                     `toml:"services"`
	Variables     *int64                     `toml:"variables"`
	ShmBytes      *int64                     `toml:"shm_bytes"`
	TotalShmBytes *int64                     `toml:"total_shm_bytes"`
	Tenant        map[string]tenantLimitFile `toml:"tenant"`
}

type tenantLimitFile struct {
	Services  *int64 `toml:"services"`
	Variables *int64 `toml:"variables"`
	ShmBytes  *int64 `toml:"shm_bytes"`
}

// quotas checks the table and fills in the defaults: a key left out keeps
// its default (a tenant's, the [limits] value); -1 means no limit.
func (lf limitsFile) quotas() (Quotas, error) {
	q := DefaultQuotas()
	set := func(dst *int64, v *int64, key string) error {
		if v == nil {
			return nil
		}
		if *v < -1 {
			return fmt.Errorf("%w: limits: %s = %d (want a count, or -1 for no limit)", ErrPolicy, key, *v)
		}
		*dst = *v
		return nil
	}
	if err := set(&q.Default.Services, lf.Services, "services"); err != nil {
		return q, err
	}
	if err := set(&q.Default.Variables, lf.Variables, "variables"); err != nil {
		return q, err
	}
	if err := set(&q.Default.ShmBytes, lf.ShmBytes, "shm_bytes"); err != nil {
		return q, err
	}
	if err := set(&q.TotalShmBytes, lf.TotalShmBytes, "total_shm_bytes"); err != nil {
		return q, err
	}
	for id, t := range lf.Tenant {
		if err := validTenant(id); err != nil {
			return q, fmt.Errorf("%w: limits.tenant.%s: %w", ErrPolicy, id, err)
		}
		tq := q.Default
		for _, f := range []struct {
			dst *int64
			v   *int64
			key string
		}{{&tq.Services, t.Services, "services"}, {&tq.Variables, t.Variables, "variables"}, {&tq.ShmBytes, t.ShmBytes, "shm_bytes"}} {
			if err := set(f.dst, f.v, "tenant."+id+"."+f.key); err != nil {
				return q, err
			}
		}
		if q.Tenants == nil {
			q.Tenants = map[string]TenantQuota{}
		}
		q.Tenants[id] = tq
	}
	return q, nil
}

// tenantUse is what one tenant holds. Guarded by quotaState.mu.
type tenantUse struct {
	services, variables, shmBytes int64
	refused                       map[string]uint64
}

// quotaState accounts what every tenant holds against the policy's Quotas,
// and the broker's total. Charges are made before the resource is taken
// and given back when it goes. It is safe for concurrent use.
type quotaState struct {
	mu       sync.Mutex
	tenants  map[string]*tenantUse
	totalShm int64
	refused  map[string]uint64 // by limit, over every tenant ever
}

func (qs *quotaState) refusedTotalLocked(limit string) {
	if qs.refused == nil {
		qs.refused = map[string]uint64{}
	}
	qs.refused[limit]++
}

func (qs *quotaState) useLocked(tenant string) *tenantUse {
	if qs.tenants == nil {
		qs.tenants = map[string]*tenantUse{}
	}
	u := qs.tenants[tenant]
	if u == nil {
		u = &tenantUse{refused: map[string]uint64{}}
		qs.tenants[tenant] = u
	}
	return u
}

// charge adds n of limit (limitServices, limitVariables or limitShmBytes) to
// tenant, refusing past its quota or, for bytes, past the broker's total. A
// forced charge is never refused (what recovery finds is already there).
func (b *Broker) charge(tenant, limit string, n int64, force bool) error {
	q := b.policy.Load().Quotas()
	tq := q.For(tenant)
	qs := &b.quota
	qs.mu.Lock()
	defer qs.mu.Unlock()
	u := qs.useLocked(tenant)
	have, max := &u.services, tq.Services
	switch limit {
	case limitVariables:
		have, max = &u.variables, tq.Variables
	case limitShmBytes:
		have, max = &u.shmBytes, tq.ShmBytes
	}
	if !force && n > 0 {
		if max >= 0 && *have+n > max {
			u.refused[limit]++
			qs.refusedTotalLocked(limit)
			return fmt.Errorf("%w: %s of tenant %s: %d held, %d more asked, limit %d", ipc.ErrQuotaExceeded, limit, tenant, *have, n, max)
		}
		if limit == limitShmBytes && q.TotalShmBytes >= 0 && qs.totalShm+n > q.TotalShmBytes {
			u.refused[limitTotalShm]++
			qs.refusedTotalLocked(limitTotalShm)
			return fmt.Errorf("%w: %s of the broker: %d held, %d more asked, limit %d", ipc.ErrQuotaExceeded, limitTotalShm, qs.totalShm, n, q.TotalShmBytes)
		}
	}
	*have += n
	if limit == limitShmBytes {
		qs.totalShm += n
	}
	return nil
}

// discharge gives back n of limit.
func (b *Broker) discharge(tenant, limit string, n int64) { b.charge(tenant, limit, -n, true) }

// trackService charges what an existing service holds to its tenant and
// makes the file's growth ask first. force charges without refusing. The
// caller holds svc.mu or has not published svc yet.
func (b *Broker) trackService(svc *service, force bool) error {
	if err := b.charge(svc.tenant, limitServices, 1, force); err != nil {
		return err
	}
	if err := b.charge(svc.tenant, limitShmBytes, svc.file.Size(), force); err != nil {
		b.discharge(svc.tenant, limitServices, 1)
		return err
	}
	b.charge(svc.tenant, limitVariables, int64(svc.file.Len()), true)
	b.fds.services.Add(1)
	tenant := svc.tenant
	svc.file.SetGrowFunc(func(n int64) error {
		if n < 0 {
			b.discharge(tenant, limitShmBytes, -n)
			return nil
		}
		return b.charge(tenant, limitShmBytes, n, false)
	})
	return nil
}

// untrackService gives back what a service held. The caller holds svc.mu,
// before the file is removed.
func (b *Broker) untrackService(svc *service) {
	b.discharge(svc.tenant, limitVariables, int64(svc.file.Len()))
	b.discharge(svc.tenant, limitShmBytes, svc.file.Size())
	b.discharge(svc.tenant, limitServices, 1)
	b.fds.services.Add(-1)
	svc.file.SetGrowFunc(nil)
}

// forgetTenant drops a deleted tenant's account once its services are gone.
func (b *Broker) forgetTenant(tenant string) {
	b.quota.mu.Lock()
	defer b.quota.mu.Unlock()
	if u := b.quota.tenants[tenant]; u != nil && u.services == 0 && u.variables == 0 && u.shmBytes == 0 {
		delete(b.quota.tenants, tenant)
	}
}

// TenantUsage is what one tenant holds against its quota (negative: no
// limit).
type TenantUsage struct {
	Tenant                        string
	Services, Variables, ShmBytes int64
	MaxServices, MaxVars, MaxShm  int64
	Refused                       map[string]uint64
}

// Tenants reports every tenant's usage against its quota, by tenant id, and
// the broker's total shared memory against its limit.
func (b *Broker) Tenants() (tenants []TenantUsage, totalShm, maxTotalShm int64) {
	q := b.policy.Load().Quotas()
	b.quota.mu.Lock()
	defer b.quota.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(b.quota.tenants)) {
		u := b.quota.tenants[id]
		tq := q.For(id)
		tenants = append(tenants, TenantUsage{Tenant: id, Services: u.services, Variables: u.variables, ShmBytes: u.shmBytes,
			MaxServices: tq.Services, MaxVars: tq.Variables, MaxShm: tq.ShmBytes, Refused: maps.Clone(u.refused)})
	}
	return tenants, b.quota.totalShm, q.TotalShmBytes
}

// Quotas are the policy's per-tenant limits and the broker's total.
func (p *Policy) Quotas() Quotas {
	if p.quotas == nil {
		return DefaultQuotas()
	}
	return *p.quotas
}

// checkCreate refuses a new service of tenant that would pass its service
// quota or eat the descriptor reserve, before any file is made. The charge
// itself is made by trackService.
func (b *Broker) checkCreate(tenant string) error {
	tq := b.policy.Load().Quotas().For(tenant)
	b.quota.mu.Lock()
	u := b.quota.useLocked(tenant)
	if tq.Services >= 0 && u.services+1 > tq.Services {
		u.refused[limitServices]++
		b.quota.refusedTotalLocked(limitServices)
		b.quota.mu.Unlock()
		return fmt.Errorf("%w: %s of tenant %s: %d held, limit %d", ipc.ErrQuotaExceeded, limitServices, tenant, u.services, tq.Services)
	}
	b.quota.mu.Unlock()
	return b.checkDescriptors()
}
