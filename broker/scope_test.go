package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/testutil"
)

func mustPolicy(t *testing.T, src string) *broker.Policy {
	t.Helper()
	p, err := broker.ParsePolicy([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPolicyScope: a grant on some services of a tenant never reaches the
// whole tenant, and a grant on some services of every tenant never reaches
// the broker.
func TestPolicyScope(t *testing.T) {
	testutil.RequireRoot(t)
	const someServices, anyTenantOneService, tenantLevel = testutil.Nobody, 65533, 65532
	h := start(t, broker.Config{Policy: mustPolicy(t, fmt.Sprintf(`
[[grant]]
users = [%d]
tenants = ["acme", "gamma"]
services = ["orders*"]
rights = ["admin"]

[[grant]]
users = [%d]
tenants = ["*"]
services = ["x"]
rights = ["admin"]

[[grant]]
users = [%d]
tenants = ["beta"]
rights = ["admin"]
`, someServices, anyTenantOneService, tenantLevel))})
	seedService(t, h, "acme", "orders1")
	seedService(t, h, "acme", "payroll")
	seedService(t, h, "gamma", "orders2")
	seedService(t, h, "beta", "payroll")

	steps := []struct {
		uid  int
		req  map[string]any
		want string
	}{
		{someServices, map[string]any{"type": "DeleteService", "tenant_id": "acme", "service_name": "payroll"}, "PERMISSION_DENIED"},
		{someServices, map[string]any{"type": "DeleteTenant", "tenant_id": "acme"}, "PERMISSION_DENIED"},
		{someServices, map[string]any{"type": "CreateTenant", "tenant_id": "acme2"}, "PERMISSION_DENIED"},
		// Admin on every service of gamma is admin on gamma.
		{someServices, map[string]any{"type": "DeleteTenant", "tenant_id": "gamma"}, "Deleted"},
		{anyTenantOneService, map[string]any{"type": "Stats"}, "PERMISSION_DENIED"},
		{anyTenantOneService, map[string]any{"type": "CreateTenant", "tenant_id": "fresh"}, "PERMISSION_DENIED"},
		{anyTenantOneService, map[string]any{"type": "DeleteTenant", "tenant_id": "beta"}, "PERMISSION_DENIED"},
		{tenantLevel, map[string]any{"type": "Stats"}, "PERMISSION_DENIED"},
		{tenantLevel, map[string]any{"type": "DeleteTenant", "tenant_id": "beta"}, "Deleted"},
		{tenantLevel, map[string]any{"type": "CreateTenant", "tenant_id": "beta"}, "Tenant"},
	}
	for i, st := range steps {
		if got := runScript(t, h, st.uid, st.uid, st.req)[0].Reply; got != st.want {
			t.Errorf("step %d: uid %d %v: %s, want %s", i, st.uid, st.req, got, st.want)
		}
	}
	c := h.dial(t)
	if _, err := c.Service(t.Context(), "acme", "payroll"); err != nil {
		t.Errorf("acme/payroll after the denied deletions: %v", err)
	}
}

// TestNoExistenceOracle: a caller without rights on a name gets the same
// answer whether the tenant or service exists or not.
func TestNoExistenceOracle(t *testing.T) {
	testutil.RequireRoot(t)
	h := start(t, broker.Config{})
	seedService(t, h, "acme", "orders")
	c := h.dial(t)
	if err := c.CreateTenant(t.Context(), "empty"); err != nil {
		t.Fatal(err)
	}
	reqs := func(tenant, service string) []map[string]any {
		id := tenant + "_" + service
		return []map[string]any{
			{"type": "GetService", "tenant_id": tenant, "service_name": service},
			{"type": "GetServiceFilePath", "tenant_id": tenant, "service_name": service},
			{"type": "DeleteService", "tenant_id": tenant, "service_name": service},
			{"type": "ListServices", "tenant_id": tenant},
			{"type": "DeleteTenant", "tenant_id": tenant},
			{"type": "CreateService", "tenant_id": tenant, "service_name": service},
			{"type": "ReadVariable", "service_id": id, "variable_name": "v"},
			{"type": "WriteVariable", "service_id": id, "variable_name": "v", "data": "x"},
			{"type": "ListVariables", "service_id": id},
			{"type": "Subscribe", "service_id": id},
			{"type": "Unsubscribe", "service_id": id},
			{"type": "AllocateVariable", "service_id": id, "variable_name": "n"},
			{"type": "DeallocateVariable", "service_id": id, "variable_name": "v"},
		}
	}
	existing := runScript(t, h, testutil.Nobody, testutil.Nobody, reqs("acme", "orders")...)
	for _, other := range [][2]string{{"acme", "nope"}, {"nope", "orders"}, {"empty", "orders"}} {
		absent := runScript(t, h, testutil.Nobody, testutil.Nobody, reqs(other[0], other[1])...)
		for i, r := range reqs("acme", "orders") {
			if existing[i].Reply != absent[i].Reply || existing[i].Reply != "PERMISSION_DENIED" {
				t.Errorf("%s: acme/orders answers %s, %s/%s answers %s", r["type"], existing[i].Reply, other[0], other[1], absent[i].Reply)
			}
		}
	}
}

// TestTenantNamedLikeBrokerFiles: tenants live apart from the broker's own
// files, so deleting a tenant named audit.log leaves the audit log alone.
func TestTenantNamedLikeBrokerFiles(t *testing.T) {
	testutil.RequireRoot(t)
	h := start(t, broker.Config{Policy: mustPolicy(t, `
[[grant]]
users = [65534]
tenants = ["audit.log", "tenants"]
rights = ["admin"]
`)})
	c := h.dial(t)
	if _, err := c.Stats(t.Context()); err != nil { // something in the audit log
		t.Fatal(err)
	}
	res := runScript(t, h, testutil.Nobody, testutil.Nobody,
		map[string]any{"type": "CreateTenant", "tenant_id": "audit.log"},
		map[string]any{"type": "CreateService", "tenant_id": "audit.log", "service_name": "x"},
		map[string]any{"type": "DeleteTenant", "tenant_id": "audit.log"},
		map[string]any{"type": "CreateTenant", "tenant_id": "tenants"},
		map[string]any{"type": "DeleteTenant", "tenant_id": "tenants"},
	)
	for i, want := range []string{"Tenant", "Service", "Deleted", "Tenant", "Deleted"} {
		if res[i].Reply != want {
			t.Fatalf("step %d: %s, want %s", i, res[i].Reply, want)
		}
	}
	seedService(t, h, "acme", "orders")
	h.stop(t)
	fi, err := os.Stat(filepath.Join(h.dataDir, "audit.log"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("audit log after deleting tenant audit.log: %v", err)
	}
	var deleted bool
	f, err := os.Open(filepath.Join(h.dataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	broker.ReadAudit(f, func(r broker.Record) error {
		deleted = deleted || r.Request == "DeleteTenant" && r.Tenant == "audit.log"
		return nil
	})
	if !deleted {
		t.Error("the deletion of tenant audit.log is not in the audit log")
	}
	if _, err := os.Stat(filepath.Join(h.dataDir, "tenants", "acme", "orders.mem")); err != nil {
		t.Error(err)
	}
}
