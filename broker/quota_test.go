package broker_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/shm"
	"github.com/commy/commy/internal/testutil"
)

// quotaPolicy lets uid 65534 create in tenant "evil", with limits.
func quotaPolicy(t *testing.T, limits string) *broker.Policy {
	t.Helper()
	p, err := broker.ParsePolicy([]byte(fmt.Sprintf(`
[[grant]]
users = [%d]
tenants = ["evil"]
rights = ["read", "map", "write", "create"]

[limits]
%s
`, testutil.Nobody, limits)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func replies(res []stepResult) string {
	var s []string
	for _, r := range res {
		s = append(s, r.Reply)
	}
	return strings.Join(s, " ")
}

// TestAttackTenantQuotas: a uid with create on one tenant cannot pass the
// tenant's service, variable and shared-memory quotas, with either backend;
// the shared memory reserved stays within the quota and other tenants are
// served.
func TestAttackTenantQuotas(t *testing.T) {
	testutil.RequireRoot(t)
	for _, backend := range []string{broker.BackendFile, broker.BackendMemfd} {
		t.Run(backend, func(t *testing.T) {
			const shmLimit = 400 << 10 // service files start at 72 KiB with 16 variables
			p := quotaPolicy(t, fmt.Sprintf("services = 3\nvariables = 4\nshm_bytes = %d\n[limits.tenant.good]\nservices = 10\nvariables = 10", shmLimit))
			h := start(t, broker.Config{Backend: backend, Policy: p, Service: shm.Options{DirCapacity: 16}})
			seedService(t, h, "evil", "s0") // one service, one variable: root is bound by the tenant's quota too
			var steps []map[string]any
			for i := 1; i <= 3; i++ {
				steps = append(steps, map[string]any{"type": "CreateService", "tenant_id": "evil", "service_name": fmt.Sprint("s", i)})
			}
			// A 60-byte request asking for 15 MiB of shared memory.
			steps = append(steps, map[string]any{"type": "AllocateVariable", "service_id": "evil_s0", "variable_name": "big", "initial_data": "x", "capacity": 15 << 20})
			for i := 0; i < 4; i++ {
				steps = append(steps, map[string]any{"type": "AllocateVariable", "service_id": "evil_s1", "variable_name": fmt.Sprint("v", i), "initial_data": "x"})
			}
			// Growth through writes is charged as well.
			for i := 0; i < 3; i++ {
				steps = append(steps, map[string]any{"type": "WriteVariable", "service_id": "evil_s1", "variable_name": fmt.Sprint("v", i), "data": strings.Repeat("y", 120<<10)})
			}
			res := runScript(t, h, testutil.Nobody, testutil.Nobody, steps...)
			want := "Service Service QUOTA_EXCEEDED QUOTA_EXCEEDED VariableData VariableData VariableData QUOTA_EXCEEDED VariableWritten VariableWritten QUOTA_EXCEEDED"
			if got := replies(res); got != want {
				tu, _, _ := h.b.Tenants()
				t.Fatalf("replies:\n got %s\nwant %s\nall %s\n%+v", got, want, replies(res), tu)
			}
			tenants, total, _ := h.b.Tenants()
			for _, u := range tenants {
				if u.Tenant == "evil" && (u.Services != 3 || u.Variables != 4 || u.ShmBytes > shmLimit) {
					t.Fatalf("evil holds %+v", u)
				}
			}
			var files int64
			c := h.dial(t)
			infos, err := c.Services(t.Context(), "evil")
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range infos {
				files += int64(s.FileSize)
			}
			if files > shmLimit || total != files {
				t.Fatalf("service files of evil: %d bytes, accounted %d, limit %d", files, total, shmLimit)
			}
			f := newScraper(t, h.b, false).scrape()
			if v := f.value("commy_tenant_usage", "limit=services,tenant=evil"); v != 3 {
				t.Fatalf("commy_tenant_usage services %v", v)
			}
			if v := f.value("commy_tenant_limit", "limit=shm_bytes,tenant=evil"); v != shmLimit {
				t.Fatalf("commy_tenant_limit shm_bytes %v", v)
			}
			if v := f.value("commy_quota_refusals_total", "limit=shm_bytes"); v < 2 {
				t.Fatalf("commy_quota_refusals_total shm_bytes %v", v)
			}
			if v := f.value("commy_shm_reserved_bytes", ""); v != float64(total) {
				t.Fatalf("commy_shm_reserved_bytes %v, want %d", v, total)
			}
			// Another tenant has its own quota and is served.
			for i := 0; i < 5; i++ {
				seedService(t, h, "good", fmt.Sprint("s", i))
			}
			// Deleting gives the quota back.
			if err := c.DeleteService(t.Context(), "evil", "s2"); err != nil {
				t.Fatal(err)
			}
			res = runScript(t, h, testutil.Nobody, testutil.Nobody,
				map[string]any{"type": "CreateService", "tenant_id": "evil", "service_name": "s9"})
			if got := replies(res); got != "Service" {
				t.Fatalf("after a delete: %s", got)
			}
		})
	}
}

// TestBrokerTotalShm: the broker's total shared memory bounds all tenants
// together.
func TestBrokerTotalShm(t *testing.T) {
	p := quotaPolicy(t, "total_shm_bytes = 3000000")
	h := start(t, broker.Config{Policy: p, Service: shm.Options{DirCapacity: 16}})
	c := h.dial(t)
	ctx := t.Context()
	if err := c.CreateTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	svc, err := c.CreateService(ctx, "a", "s")
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Allocate(ctx, "v", nil, 4<<20)
	if !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("allocate past the total: %v", err)
	}
}

func TestParseLimits(t *testing.T) {
	for _, src := range []string{
		"[limits]\nservices = -2",
		"[limits]\nbogus = 1",
		"[limits.tenant.\"a_b\"]\nservices = 1",
		"[limits.tenant.a]\nfiles = 1",
	} {
		if _, err := broker.ParsePolicy([]byte(src)); !errors.Is(err, broker.ErrPolicy) {
			t.Errorf("%q: %v", src, err)
		}
	}
	p, err := broker.ParsePolicy([]byte("[limits]\nservices = 5\nshm_bytes = -1\n[limits.tenant.a]\nvariables = 7"))
	if err != nil {
		t.Fatal(err)
	}
	q := p.Quotas()
	if a := q.For("a"); a.Services != 5 || a.Variables != 7 || a.ShmBytes != -1 {
		t.Fatalf("tenant a: %+v", a)
	}
	if b := q.For("b"); b.Services != 5 || b.Variables != broker.DefaultTenantVariables || b.ShmBytes != -1 {
		t.Fatalf("tenant b: %+v", b)
	}
	if q.TotalShmBytes != broker.DefaultTotalShmBytes {
		t.Fatalf("total: %d", q.TotalShmBytes)
	}
}
