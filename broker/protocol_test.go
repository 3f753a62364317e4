package broker_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// TestEveryMessage sends every request type through a real socket and checks
// its reply and each error code it can return.
func TestEveryMessage(t *testing.T) {
	for _, backend := range []string{broker.BackendFile, broker.BackendMemfd} {
		t.Run(backend, func(t *testing.T) {
			h := start(t, broker.Config{Backend: backend, MaxFrame: 1 << 20})
			r := h.raw(t, true)
			type step struct {
				name string
				req  ipc.Message
				want string // reply type, or error code
			}
			sid := "acme_orders"
			steps := []step{
				{"heartbeat", &ipc.Heartbeat{}, "Heartbeat"},
				{"create tenant", &ipc.CreateTenant{TenantID: "acme"}, "Tenant"},
				{"create tenant again", &ipc.CreateTenant{TenantID: "acme"}, "ALREADY_EXISTS"},
				{"create tenant with _", &ipc.CreateTenant{TenantID: "a_b"}, "INVALID_NAME"},
				{"create tenant ..", &ipc.CreateTenant{TenantID: ".."}, "INVALID_NAME"},
				{"list tenants", &ipc.ListTenants{}, "Tenants"},
				{"create service", &ipc.CreateService{TenantID: "acme", ServiceName: "orders"}, "Service"},
				{"create service again", &ipc.CreateService{TenantID: "acme", ServiceName: "orders"}, "ALREADY_EXISTS"},
				{"create service no tenant", &ipc.CreateService{TenantID: "nope", ServiceName: "x"}, "TENANT_NOT_FOUND"},
				{"create service bad name", &ipc.CreateService{TenantID: "acme", ServiceName: "a/b"}, "INVALID_NAME"},
				{"get service", &ipc.GetService{TenantID: "acme", ServiceName: "orders"}, "Service"},
				{"get service missing", &ipc.GetService{TenantID: "acme", ServiceName: "nope"}, "SERVICE_NOT_FOUND"},
				{"get service no tenant", &ipc.GetService{TenantID: "nope", ServiceName: "x"}, "TENANT_NOT_FOUND"},
				{"list services", &ipc.ListServices{TenantID: "acme"}, "Services"},
				{"list services no tenant", &ipc.ListServices{TenantID: "nope"}, "TENANT_NOT_FOUND"},
				{"allocate", &ipc.AllocateVariable{ServiceID: sid, VariableName: "count", InitialData: []byte("0")}, "VariableData"},
				{"allocate with capacity", &ipc.AllocateVariable{ServiceID: sid, VariableName: "big", InitialData: []byte{}, Capacity: 4096}, "VariableData"},
				{"allocate again", &ipc.AllocateVariable{ServiceID: sid, VariableName: "count", InitialData: []byte("0")}, "ALREADY_EXISTS"},
				{"allocate too large", &ipc.AllocateVariable{ServiceID: sid, VariableName: "huge", InitialData: []byte{}, Capacity: 2 << 20}, "VALUE_TOO_LARGE"},
				{"allocate bad name", &ipc.AllocateVariable{ServiceID: sid, VariableName: "", InitialData: []byte{}}, "INVALID_NAME"},
				{"allocate bad service id", &ipc.AllocateVariable{ServiceID: "acmeorders", VariableName: "x"}, "INVALID_SERVICE_ID"},
				{"allocate unknown service", &ipc.AllocateVariable{ServiceID: "acme_nope", VariableName: "x"}, "SERVICE_NOT_FOUND"},
				{"read", &ipc.ReadVariable{ServiceID: sid, VariableName: "count"}, "VariableData"},
				{"read missing", &ipc.ReadVariable{ServiceID: sid, VariableName: "nope"}, "VARIABLE_NOT_FOUND"},
				{"write", &ipc.WriteVariable{ServiceID: sid, VariableName: "count", Data: []byte("1")}, "VariableWritten"},
				{"write grows", &ipc.WriteVariable{ServiceID: sid, VariableName: "count", Data: bytes.Repeat([]byte("x"), 100000)}, "VariableWritten"},
				{"write missing", &ipc.WriteVariable{ServiceID: sid, VariableName: "nope", Data: []byte("1")}, "VARIABLE_NOT_FOUND"},
				{"list variables", &ipc.ListVariables{ServiceID: sid}, "Variables"},
				{"file path", &ipc.GetServiceFilePath{TenantID: "acme", ServiceName: "orders"}, "ServiceFilePath"},
				{"file path missing", &ipc.GetServiceFilePath{TenantID: "acme", ServiceName: "nope"}, "SERVICE_NOT_FOUND"},
				{"report", &ipc.ReportVariableChanges{ServiceID: sid, ChangedVariables: []string{"count", "big"},
					NewValues: []ipc.NamedValue{{Name: "count", Value: []byte("2")}, {Name: "big", Value: []byte("b")}}}, "VariableChangesAcknowledged"},
				{"report unknown variable", &ipc.ReportVariableChanges{ServiceID: sid, ChangedVariables: []string{"count", "nope"},
					NewValues: []ipc.NamedValue{{Name: "count", Value: []byte("3")}, {Name: "nope", Value: []byte("x")}}}, "VARIABLE_NOT_FOUND"},
				{"report mismatched lists", &ipc.ReportVariableChanges{ServiceID: sid, ChangedVariables: []string{"big"},
					NewValues: []ipc.NamedValue{{Name: "count", Value: []byte("3")}}}, "INVALID_REQUEST"},
				{"report nothing", &ipc.ReportVariableChanges{ServiceID: sid}, "INVALID_REQUEST"},
				{"subscribe", &ipc.Subscribe{ServiceID: sid}, "Subscribed"},
				{"subscribe filtered", &ipc.Subscribe{ServiceID: sid, Variables: []string{"count"}}, "Subscribed"},
				{"subscribe missing", &ipc.Subscribe{ServiceID: "acme_nope"}, "SERVICE_NOT_FOUND"},
				{"unsubscribe", &ipc.Unsubscribe{ServiceID: sid}, "Unsubscribed"},
				{"unsubscribe bad id", &ipc.Unsubscribe{ServiceID: "x"}, "INVALID_SERVICE_ID"},
				{"stats", &ipc.Stats{}, "Stats"},
				{"deallocate", &ipc.DeallocateVariable{ServiceID: sid, VariableName: "big"}, "Deleted"},
				{"deallocate missing", &ipc.DeallocateVariable{ServiceID: sid, VariableName: "big"}, "VARIABLE_NOT_FOUND"},
				{"hello again", &ipc.Hello{Protocol: 1}, "PROTOCOL_ERROR"},
				{"not a request", &ipc.Welcome{}, "UNKNOWN_MESSAGE"},
				{"delete service", &ipc.DeleteService{TenantID: "acme", ServiceName: "orders"}, "Deleted"},
				{"delete service again", &ipc.DeleteService{TenantID: "acme", ServiceName: "orders"}, "SERVICE_NOT_FOUND"},
				{"read deleted", &ipc.ReadVariable{ServiceID: sid, VariableName: "count"}, "SERVICE_NOT_FOUND"},
				{"delete tenant", &ipc.DeleteTenant{TenantID: "acme"}, "Deleted"},
				{"delete tenant again", &ipc.DeleteTenant{TenantID: "acme"}, "TENANT_NOT_FOUND"},
			}
			for _, s := range steps {
				rep := r.do(s.req)
				got := rep.Kind()
				if c := code(rep); c != "" {
					got = c
				}
				if got != s.want {
					t.Fatalf("%s: got %s (%#v), want %s", s.name, got, rep, s.want)
				}
			}
			f, ok := r.conn.TakeFD()
			if !ok {
				t.Fatal("GetServiceFilePath passed no descriptor")
			}
			f.Close()
		})
	}
}

// TestReplyContents checks the fields of the replies.
func TestReplyContents(t *testing.T) {
	h := start(t, broker.Config{})
	r := h.raw(t, false)
	w, ok := r.do(&ipc.Hello{Protocol: 1, ClientName: "test"}).(*ipc.Welcome)
	if !ok || w.Protocol != 1 || w.PID != int64(os.Getpid()) || w.UID != uint64(os.Getuid()) || w.GID != uint64(os.Getgid()) || w.ClientID == 0 || w.MaxFrame != ipc.DefaultMaxFrame {
		t.Fatalf("welcome %#v", w)
	}
	r.do(&ipc.CreateTenant{TenantID: "t1"})
	svc := r.do(&ipc.CreateService{TenantID: "t1", ServiceName: "s.1"}).(*ipc.Service)
	if svc.ServiceID != "t1_s.1" || svc.TenantID != "t1" || svc.ServiceName != "s.1" || svc.FilePath != filepath.Join(h.dataDir, "tenants", "t1", "s.1.mem") {
		t.Fatalf("service %#v", svc)
	}
	vd := r.do(&ipc.AllocateVariable{ServiceID: "t1_s.1", VariableName: "v", InitialData: []byte("hi")}).(*ipc.VariableData)
	if string(vd.Data) != "hi" || vd.Version != 1 {
		t.Fatalf("allocate %#v", vd)
	}
	vw := r.do(&ipc.WriteVariable{ServiceID: "t1_s.1", VariableName: "v", Data: []byte("hello")}).(*ipc.VariableWritten)
	if vw.Version != 2 || vw.VariableName != "v" {
		t.Fatalf("written %#v", vw)
	}
	r.conn.WriteFrame(mustRawFrame(map[string]any{"type": "WriteVariable", "id": 500, "service_id": "t1_s.1", "variable_name": "v"}), nil)
	if c := code(r.recv()); c != "INVALID_REQUEST" {
		t.Fatalf("WriteVariable without data: %s", c)
	}
	vars := r.do(&ipc.ListVariables{ServiceID: "t1_s.1"}).(*ipc.Variables)
	if len(vars.Variables) != 1 || vars.Variables[0] != (ipc.VariableInfo{Name: "v", Size: 5, Capacity: 64, Version: 2}) {
		t.Fatalf("variables %#v", vars)
	}
	svcs := r.do(&ipc.ListServices{TenantID: "t1"}).(*ipc.Services)
	fi, _ := os.Stat(svc.FilePath)
	if len(svcs.Services) != 1 || svcs.Services[0].Variables != 1 || svcs.Services[0].FileSize != uint64(fi.Size()) {
		t.Fatalf("services %#v", svcs)
	}
	tn := r.do(&ipc.ListTenants{}).(*ipc.Tenants)
	if !slices.Equal(tn.Tenants, []string{"t1"}) {
		t.Fatalf("tenants %v", tn.Tenants)
	}
	hb := r.do(&ipc.Heartbeat{}).(*ipc.Heartbeat)
	if ts, err := time.Parse(time.RFC3339, hb.Timestamp); err != nil || time.Since(ts) > time.Minute {
		t.Fatalf("heartbeat %q: %v", hb.Timestamp, err)
	}
	st := r.do(&ipc.Stats{}).(*ipc.Stats)
	if st.Tenants != 1 || st.Services != 1 || st.Variables != 1 || st.Connections != 1 || st.Requests["WriteVariable"] != 2 {
		t.Fatalf("stats %#v", st)
	}
}

// TestServiceFilePath is the seed guide's valid-path test: the path is
// absolute and exists, the size matches, and the passed descriptor maps the
// same bytes ReadVariable returns.
func TestServiceFilePath(t *testing.T) {
	for _, backend := range []string{broker.BackendFile, broker.BackendMemfd} {
		t.Run(backend, func(t *testing.T) {
			h := start(t, broker.Config{Backend: backend})
			r := h.raw(t, true)
			r.do(&ipc.CreateTenant{TenantID: "acme"})
			r.do(&ipc.CreateService{TenantID: "acme", ServiceName: "svc"})
			r.do(&ipc.AllocateVariable{ServiceID: "acme_svc", VariableName: "v", InitialData: []byte("value")})
			sfp, ok := r.do(&ipc.GetServiceFilePath{TenantID: "acme", ServiceName: "svc"}).(*ipc.ServiceFilePath)
			if !ok {
				t.Fatal("no ServiceFilePath")
			}
			f, ok := r.conn.TakeFD()
			if !ok {
				t.Fatal("no descriptor")
			}
			if !filepath.IsAbs(sfp.FilePath) || sfp.ServiceID != "acme_svc" {
				t.Fatalf("%#v", sfp)
			}
			fi, err := os.Stat(sfp.FilePath)
			if err != nil || uint64(fi.Size()) != sfp.FileSize {
				t.Fatalf("stat %s: %v, size %d vs %d", sfp.FilePath, err, fi.Size(), sfp.FileSize)
			}
			dfi, _ := f.Stat()
			if !os.SameFile(fi, dfi) {
				t.Fatal("descriptor and path are different files")
			}
			m, err := shm.Map(f)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got, v, err := m.Read("v", nil)
			if err != nil || string(got) != "value" || v != 1 {
				t.Fatalf("mapped read %q v%d %v", got, v, err)
			}
		})
	}
}

// TestMalformedFrames throws bad input at the broker and checks it answers
// with the right code and keeps serving a well-behaved client.
func TestMalformedFrames(t *testing.T) {
	h := start(t, broker.Config{MaxFrame: 1 << 16})
	frame := func(body []byte) []byte {
		return binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	}
	helloFrame := slices.Clip(mustFrame(&ipc.Hello{Header: ipc.Header{ID: 1}, Protocol: 1}))
	deep := bytes.Repeat([]byte{0x81}, 100) // 100 nested arrays
	deep = append(deep, 0x00)
	cases := []struct {
		name  string
		data  []byte
		code  string
		alive bool // the connection stays usable
	}{
		{"garbage first", append(frame([]byte("garbage!")), "garbage!"...), "PROTOCOL_ERROR", false},
		{"not hello first", mustFrame(&ipc.ListTenants{Header: ipc.Header{ID: 1}}), "PROTOCOL_ERROR", false},
		{"wrong protocol", mustFrame(&ipc.Hello{Header: ipc.Header{ID: 1}, Protocol: 2}), "PROTOCOL_ERROR", false},
		{"4 GiB length", []byte{0xFF, 0xFF, 0xFF, 0xFF}, "FRAME_TOO_LARGE", false},
		{"zero length", []byte{0, 0, 0, 0}, "PROTOCOL_ERROR", false},
		{"garbage after hello", append(append(helloFrame, frame([]byte{0xFF, 0x00})...), 0xFF, 0x00), "INVALID_REQUEST", true},
		{"deep nesting", append(append(helloFrame, frame(deep)...), deep...), "INVALID_REQUEST", true},
		{"wrong field type", append(helloFrame, mustRawFrame(map[string]any{"type": "CreateTenant", "id": 2, "tenant_id": 42})...), "INVALID_REQUEST", true},
		{"unknown type", append(helloFrame, mustRawFrame(map[string]any{"type": "Frobnicate", "id": 2})...), "UNKNOWN_MESSAGE", true},
		{"no type", append(helloFrame, mustRawFrame(map[string]any{"id": 2})...), "INVALID_REQUEST", true},
		{"zero id", append(helloFrame, mustRawFrame(map[string]any{"type": "Heartbeat", "id": 0})...), "INVALID_REQUEST", true},
		{"negative id", append(helloFrame, mustRawFrame(map[string]any{"type": "Heartbeat", "id": -1})...), "INVALID_REQUEST", true},
		{"not a map", append(helloFrame, mustRawFrame([]any{1, 2})...), "INVALID_REQUEST", true},
		{"trailing bytes", append(helloFrame, append(frame([]byte{0xA0, 0x00}), 0xA0, 0x00)...), "INVALID_REQUEST", true},
		{"body over the limit", append(helloFrame, frame(make([]byte, 1<<17))...), "FRAME_TOO_LARGE", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := ipc.Dial(h.sock, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := conn.WriteFrame(c.data, nil); err != nil {
				t.Fatal(err)
			}
			var got ipc.Message
			for {
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				body, err := conn.ReadFrame()
				if err != nil {
					t.Fatalf("no reply: %v", err)
				}
				m, _, err := ipc.Decode(body)
				if err != nil {
					t.Fatal(err)
				}
				if m.Kind() != "Welcome" {
					got = m
					break
				}
			}
			if code(got) != c.code {
				t.Fatalf("got %#v, want %s", got, c.code)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			hb, _ := ipc.EncodeFrame(&ipc.Heartbeat{Header: ipc.Header{ID: 99}})
			werr := conn.WriteFrame(hb, nil)
			body, rerr := conn.ReadFrame()
			if c.alive {
				if werr != nil || rerr != nil {
					t.Fatalf("connection unusable: %v %v", werr, rerr)
				}
				if m, _, _ := ipc.Decode(body); m == nil || m.Kind() != "Heartbeat" {
					t.Fatalf("after bad frame: %#v", m)
				}
			} else if rerr == nil {
				t.Fatalf("connection still open after %s", c.code)
			}
		})
	}
	// A truncated frame: the client hangs up half way.
	c := rawWrite(t, h.sock, append(helloFrame, 0, 0, 0, 10, 0xA1))
	c.Close()
	// Afterwards a well-behaved client is served.
	cl := h.dial(t)
	if _, err := cl.Heartbeat(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func mustFrame(m ipc.Message) []byte {
	f, err := ipc.EncodeFrame(m)
	if err != nil {
		panic(err)
	}
	return f
}
