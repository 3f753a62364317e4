package broker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
	"github.com/commy/commy/internal/testutil"
	"github.com/fxamacker/cbor/v2"
)

var children = testutil.Children{
	"script":     scriptChild,
	"serve":      serveChild,
	"connect":    connectChild,
	"subscriber": subscriberChild,
	"attack":     attackChild,
	"stall":      stallChild,
}

func mustRawFrame(v any) []byte {
	body, err := cbor.Marshal(v)
	if err != nil {
		panic(err)
	}
	return append([]byte{byte(len(body) >> 24), byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// stepResult is what the script child saw for one request.
type stepResult struct {
	Reply    string // reply type or error code
	FD       bool   // a descriptor came with it
	Mapped   string // value of variable "v" read through the descriptor
	OpenPath string // error opening file_path directly ("" if it opened)
}

// scriptChild connects to COMMY_SOCK and runs the JSON requests in
// COMMY_SCRIPT, printing a stepResult for each. Strings under "data",
// "initial_data" and in "new_values" become byte strings.
func scriptChild() int {
	var steps []map[string]any
	script := []byte(os.Getenv("COMMY_SCRIPT"))
	if name := os.Getenv("COMMY_SCRIPT_FILE"); name != "" {
		var err error
		if script, err = os.ReadFile(name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	if err := json.Unmarshal(script, &steps); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	conn, err := ipc.Dial(os.Getenv("COMMY_SOCK"), 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer conn.Close()
	var out []stepResult
	for i, st := range append([]map[string]any{{"type": "Hello", "protocol": 1}}, steps...) {
		st["id"] = uint64(i + 1)
		if c, ok := st["capacity"].(float64); ok {
			st["capacity"] = uint64(c)
		}
		for _, k := range []string{"data", "initial_data"} {
			if s, ok := st[k].(string); ok {
				st[k] = []byte(s)
			}
		}
		if nv, ok := st["new_values"].([]any); ok {
			for j, p := range nv {
				pair := p.([]any)
				nv[j] = []any{pair[0], []byte(pair[1].(string))}
			}
		}
		if err := conn.WriteFrame(mustRawFrame(st), nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		body, err := conn.ReadFrame()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		m, _, err := ipc.Decode(body)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		res := stepResult{Reply: m.Kind()}
		if e, ok := m.(*ipc.Error); ok {
			res.Reply = e.ErrorCode
		}
		if sfp, ok := m.(*ipc.ServiceFilePath); ok {
			if f, ok := conn.TakeFD(); ok {
				res.FD = true
				if mp, err := shm.Map(f); err == nil {
					v, _, err := mp.Read("v", nil)
					res.Mapped = string(v)
					if err != nil {
						res.Mapped = "error: " + err.Error()
					}
					mp.Close()
				} else {
					f.Close()
				}
			}
			if f, err := os.Open(sfp.FilePath); err != nil {
				res.OpenPath = err.Error()
			} else {
				f.Close()
			}
		}
		if i > 0 {
			out = append(out, res)
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// runScript runs requests on the broker as uid/gid.
func runScript(t *testing.T, h *harness, uid, gid int, steps ...map[string]any) []stepResult {
	t.Helper()
	script, _ := json.Marshal(steps)
	env := "COMMY_SCRIPT=" + string(script)
	if len(script) > 64<<10 { // past what one environment string may hold
		dir, err := os.MkdirTemp("", "commy-script")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		name := filepath.Join(dir, "script.json")
		if err := os.WriteFile(name, script, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755) // the child's uid reads it
		env = "COMMY_SCRIPT_FILE=" + name
	}
	cmd := testutil.Child(t, "script", uid, gid, "COMMY_SOCK="+h.sock, env)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("script child: %v: %s", err, stderr.String())
	}
	var res []stepResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("script child said %q: %v", out, err)
	}
	return res
}

func seedService(t *testing.T, h *harness, tenant, service string) {
	t.Helper()
	c := h.dial(t)
	ctx := t.Context()
	if err := c.CreateTenant(ctx, tenant); err != nil && !errors.Is(err, client.ErrAlreadyExists) {
		t.Fatal(err)
	}
	svc, err := c.CreateService(ctx, tenant, service)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Allocate(ctx, "v", []byte("seed"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestFilePathPermissionDenied is the seed guide's test: without a policy a
// second user gets PERMISSION_DENIED for GetServiceFilePath, and the denial is
// audited.
func TestFilePathPermissionDenied(t *testing.T) {
	testutil.RequireRoot(t)
	h := start(t, broker.Config{})
	seedService(t, h, "acme", "orders")
	res := runScript(t, h, testutil.Nobody, testutil.Nobody,
		map[string]any{"type": "GetServiceFilePath", "tenant_id": "acme", "service_name": "orders"})
	if res[0].Reply != "PERMISSION_DENIED" || res[0].FD {
		t.Fatalf("got %+v", res[0])
	}
	h.stop(t)
	found := false
	f, err := os.Open(filepath.Join(h.dataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	broker.ReadAudit(f, func(r broker.Record) error {
		if r.Event == broker.EventDenied && r.Request == "GetServiceFilePath" && r.UID != nil && *r.UID == testutil.Nobody && r.Code == "PERMISSION_DENIED" {
			found = true
		}
		return nil
	})
	if !found {
		t.Fatal("denial not audited")
	}
}

// TestPolicyMatrix checks each right for two real users against a policy.
func TestPolicyMatrix(t *testing.T) {
	testutil.RequireRoot(t)
	const reader, writer = testutil.Nobody, 65533
	policy, err := broker.ParsePolicy([]byte(fmt.Sprintf(`
[[grant]]
users = [%d]
tenants = ["acme"]
services = ["pub*"]
rights = ["read"]

[[grant]]
groups = ["%d"]
tenants = ["acme"]
rights = ["read", "map", "write", "create"]
`, reader, writer)))
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, broker.Config{Policy: policy})
	seedService(t, h, "acme", "public")
	seedService(t, h, "acme", "private")
	seedService(t, h, "other", "public")

	req := func(kind, svc string, extra ...any) map[string]any {
		m := map[string]any{"type": kind}
		tenant, name, _ := strings.Cut(svc, "/")
		switch kind {
		case "GetServiceFilePath", "CreateService", "DeleteService", "GetService":
			m["tenant_id"], m["service_name"] = tenant, name
		case "ListServices", "CreateTenant":
			m["tenant_id"] = tenant
		default:
			m["service_id"] = tenant + "_" + name
			m["variable_name"] = "v"
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	steps := []map[string]any{
		req("ReadVariable", "acme/public"),
		req("ReadVariable", "acme/private"),
		req("ReadVariable", "other/public"),
		req("ListVariables", "acme/public"),
		req("Subscribe", "acme/public"),
		req("GetServiceFilePath", "acme/public"),
		req("GetServiceFilePath", "acme/private"),
		req("WriteVariable", "acme/public", "data", "w"),
		req("ReportVariableChanges", "acme/public", "changed_variables", []string{"v"}, "new_values", []any{[]any{"v", "r"}}),
		req("AllocateVariable", "acme/public", "variable_name", "n", "initial_data", "x"),
		req("CreateService", "acme/new"),
		req("CreateTenant", "fresh/"),
		req("ListServices", "acme/"),
		req("ListServices", "other/"),
		{"type": "ListTenants"},
		{"type": "Stats"},
	}
	want := map[int][]string{
		reader: {"VariableData", "PERMISSION_DENIED", "PERMISSION_DENIED", "Variables", "Subscribed",
			"HYBRID_ACCESS_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED",
			"PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED", "Services", "PERMISSION_DENIED",
			"Tenants", "PERMISSION_DENIED"},
		writer: {"VariableData", "VariableData", "PERMISSION_DENIED", "Variables", "Subscribed",
			"ServiceFilePath", "ServiceFilePath", "VariableWritten", "VariableChangesAcknowledged",
			"VariableData", "Service", "PERMISSION_DENIED", "Services", "PERMISSION_DENIED",
			"Tenants", "PERMISSION_DENIED"},
	}
	for _, uid := range []int{reader, writer} {
		t.Run(fmt.Sprint(uid), func(t *testing.T) {
			gid := uid
			res := runScript(t, h, uid, gid, steps...)
			for i, w := range want[uid] {
				if res[i].Reply != w {
					t.Errorf("uid %d step %d %v: got %s, want %s", uid, i, steps[i]["type"], res[i].Reply, w)
				}
			}
			if uid == writer {
				if !res[5].FD || res[5].Mapped == "" || strings.HasPrefix(res[5].Mapped, "error") {
					t.Errorf("writer could not map the passed descriptor: %+v", res[5])
				}
				if res[5].OpenPath == "" {
					t.Errorf("writer opened the 0600 service file by path")
				}
			}
		})
	}
	// ListServices shows the reader only what it may read.
	res := runScript(t, h, reader, reader, req("ListServices", "acme/"))
	if res[0].Reply != "Services" {
		t.Fatal(res)
	}
}

// TestPolicyReload swaps the policy while clients are connected.
func TestPolicyReload(t *testing.T) {
	testutil.RequireRoot(t)
	h := start(t, broker.Config{})
	seedService(t, h, "acme", "orders")
	read := map[string]any{"type": "ReadVariable", "service_id": "acme_orders", "variable_name": "v"}
	if r := runScript(t, h, testutil.Nobody, testutil.Nobody, read); r[0].Reply != "PERMISSION_DENIED" {
		t.Fatal(r)
	}
	p, err := broker.ParsePolicy([]byte(`[[grant]]
users = [65534]
tenants = ["*"]
rights = ["read"]`))
	if err != nil {
		t.Fatal(err)
	}
	h.b.SetPolicy(p)
	if r := runScript(t, h, testutil.Nobody, testutil.Nobody, read); r[0].Reply != "VariableData" {
		t.Fatal(r)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for name, src := range map[string]string{
		"unknown right": "[[grant]]\nusers=[1]\ntenants=['*']\nrights=['fly']",
		"unknown key":   "[[grant]]\nusers=[1]\ntenants=['*']\nrights=['read']\ncolour='red'",
		"no subject":    "[[grant]]\ntenants=['*']\nrights=['read']",
		"no tenants":    "[[grant]]\nusers=[1]\nrights=['read']",
		"bad glob":      "[[grant]]\nusers=[1]\ntenants=['[']\nrights=['read']",
		"unknown user":  "[[grant]]\nusers=['no-such-user-here']\ntenants=['*']\nrights=['read']",
		"not toml":      "this is not toml",
		"negative uid":  "[[grant]]\nusers=[-1]\ntenants=['*']\nrights=['read']",
	} {
		if _, err := broker.ParsePolicy([]byte(src)); !errors.Is(err, broker.ErrPolicy) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
