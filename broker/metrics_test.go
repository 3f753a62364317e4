package broker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/metrics"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metered is a raw connection that keeps the score of what it did: the
// frames it sent and received, byte for byte, and its requests by type and
// outcome.
type metered struct {
	*raw
	sc *score
}

type score struct {
	sent, received int
	requests       map[[2]string]uint64 // type, outcome
}

func (sc *score) count(kind string, reply ipc.Message) {
	outcome := "ok"
	if c := code(reply); c != "" {
		outcome = c
	}
	sc.requests[[2]string{kind, outcome}]++
	sc.received += frameLen(reply)
}

func frameLen(m ipc.Message) int { return len(mustFrame(m)) }

func (h *harness) metered(t *testing.T, sc *score) *metered {
	t.Helper()
	m := &metered{raw: h.raw(t, false), sc: sc}
	if w := m.do(&ipc.Hello{Protocol: ipc.ProtocolVersion}); w.Kind() != "Welcome" {
		t.Fatalf("hello: %#v", w)
	}
	return m
}

// do sends a request and returns its reply; the connection must not be
// subscribed (do skips pushes, which would go unscored).
func (m *metered) do(req ipc.Message) ipc.Message {
	m.t.Helper()
	reply := m.raw.do(req) // sets the request's type and id
	m.sc.sent += frameLen(req)
	m.sc.count(req.Kind(), reply)
	return reply
}

// frame sends a hand-made frame of type kind and returns the reply.
func (m *metered) frame(kind string, frame []byte) ipc.Message {
	m.t.Helper()
	if err := m.conn.WriteFrame(frame, nil); err != nil {
		m.t.Fatal(err)
	}
	reply := m.recv()
	m.sc.sent += len(frame)
	m.sc.count(kind, reply)
	return reply
}

// scraper serves the broker's metrics on a Unix socket and scrapes them
// with real HTTP requests.
type scraper struct {
	t      *testing.T
	srv    *metrics.Server
	client *http.Client
}

func newScraper(t *testing.T, b *broker.Broker, pprof bool) *scraper {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	l, err := metrics.ListenConfig{}.Listen(t.Context(), "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metrics.New(metrics.Config{Collector: b.Collector(), Version: broker.Version, Pprof: pprof})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	srv.Start(l)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := srv.Close(); err != nil {
			t.Errorf("close metrics server: %v", err)
		}
	})
	return &scraper{t: t, srv: srv, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (s *scraper) get(path string) *http.Response {
	s.t.Helper()
	resp, err := s.client.Get("http://commy" + path)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// scrape parses /metrics with the Prometheus text parser.
func (s *scraper) scrape() families {
	s.t.Helper()
	resp := s.get("/metrics")
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.t.Fatalf("parse /metrics: %v", err)
	}
	return families{s.t, mfs}
}

type families struct {
	t   *testing.T
	mfs map[string]*dto.MetricFamily
}

// series returns every sample of a family by its labels ("k=v,k=v", sorted
// as the exposition writes them); for a histogram, the sample count.
func (f families) series(name string) map[string]float64 {
	f.t.Helper()
	mf := f.mfs[name]
	if mf == nil {
		f.t.Fatalf("no metric %s", name)
	}
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		key := strings.Join(ls, ",")
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			out[key] = m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			out[key] = m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			out[key] = float64(m.GetHistogram().GetSampleCount())
		default:
			f.t.Fatalf("%s: unexpected type %v", name, mf.GetType())
		}
	}
	return out
}

// value returns the one sample of a family with these labels.
func (f families) value(name, labels string) float64 {
	f.t.Helper()
	v, ok := f.series(name)[labels]
	if !ok {
		f.t.Fatalf("no %s{%s}: %v", name, labels, f.series(name))
	}
	return v
}

func equalSeries(t *testing.T, name string, got, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s{%s} = %v, want %v", name, k, got[k], w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s{%s} = %v, not expected", name, k, g)
		}
	}
}

// TestMetricsWorkload runs a scripted workload on three connections, then
// scrapes /metrics over HTTP and checks every figure against the script.
func TestMetricsWorkload(t *testing.T) {
	const (
		vars    = 50  // variables of a/s, with long names: a notice of all of them is ~6 KiB
		reports = 100 // ReportVariableChanges of every variable: ~600 KiB of notices for a subscriber that does not read
		writes  = 20
		reads   = 30
		missing = 3 // reads of a variable that does not exist
		beats   = 5
	)
	h := start(t, broker.Config{Metrics: true, MetricsTenants: 1, MaxConnections: 3})
	sc := &score{requests: map[[2]string]uint64{}}
	admin, writer := h.metered(t, sc), h.metered(t, sc)
	sub := h.metered(t, sc)

	// A fourth connection is one too many.
	extra, err := net.Dial("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(extra); err != nil || !bytes.Contains(got, []byte("QUOTA_EXCEEDED")) {
		t.Fatalf("connection over the limit: read %q, %v", got, err)
	}

	admin.do(&ipc.CreateTenant{TenantID: "a"})
	admin.do(&ipc.CreateTenant{TenantID: "b"})
	if c := code(admin.do(&ipc.CreateTenant{TenantID: "a"})); c != "ALREADY_EXISTS" {
		t.Fatalf("CreateTenant again: %q", c)
	}
	svcA := admin.do(&ipc.CreateService{TenantID: "a", ServiceName: "s"}).(*ipc.Service)
	svcB := admin.do(&ipc.CreateService{TenantID: "b", ServiceName: "s"}).(*ipc.Service)
	names := make([]string, vars)
	for i := range names {
		names[i] = fmt.Sprintf("%s%03d", strings.Repeat("n", 100), i)
		admin.do(&ipc.AllocateVariable{ServiceID: "a_s", VariableName: names[i], InitialData: []byte("0")})
	}
	admin.do(&ipc.AllocateVariable{ServiceID: "b_s", VariableName: "x", InitialData: []byte("0")})
	sub.do(&ipc.Subscribe{ServiceID: "a_s"})

	// The subscriber reads nothing until the end: its socket fills and
	// the broker merges the notices that wait.
	values := make([]ipc.NamedValue, vars)
	for r := 0; r < reports; r++ {
		for i := range values {
			values[i] = ipc.NamedValue{Name: names[i], Value: []byte(fmt.Sprint(r))}
		}
		if c := code(writer.do(&ipc.ReportVariableChanges{ServiceID: "a_s", ChangedVariables: names, NewValues: values})); c != "" {
			t.Fatalf("report %d: %s", r, c)
		}
	}
	for i := 0; i < writes; i++ {
		writer.do(&ipc.WriteVariable{ServiceID: "a_s", VariableName: names[0], Data: []byte("w")})
	}
	for i := 0; i < reads; i++ {
		writer.do(&ipc.ReadVariable{ServiceID: "a_s", VariableName: names[i%vars]})
	}
	for i := 0; i < missing; i++ {
		if c := code(writer.do(&ipc.ReadVariable{ServiceID: "a_s", VariableName: "nope"})); c != "VARIABLE_NOT_FOUND" {
			t.Fatalf("read of a missing variable: %q", c)
		}
	}
	if c := code(writer.do(&ipc.ReadVariable{ServiceID: "a_zz", VariableName: "v"})); c != "SERVICE_NOT_FOUND" {
		t.Fatalf("read of a missing service: %q", c)
	}
	if c := code(writer.do(&ipc.ReadVariable{ServiceID: "nounderscore", VariableName: "v"})); c != "INVALID_SERVICE_ID" {
		t.Fatalf("read with a bad service id: %q", c)
	}
	for i := 0; i < beats; i++ {
		writer.do(&ipc.Heartbeat{})
	}
	if c := code(writer.frame("Heartbeat", mustFrame(&ipc.Heartbeat{}))); c != "INVALID_REQUEST" {
		t.Fatalf("request id 0: %q", c)
	}
	if c := code(writer.frame("_unknown", mustRawFrame(map[string]any{"type": "Bogus", "id": 99}))); c != "UNKNOWN_MESSAGE" {
		t.Fatalf("unknown type: %q", c)
	}

	// Drain the subscriber until every variable is at its last version.
	final := map[string]uint64{}
	for _, n := range names {
		final[n] = 1 + reports
	}
	final[names[0]] += writes
	seen := map[string]uint64{}
	for len(seen) < vars || !sameVersions(seen, final) {
		m := sub.recv()
		vu, ok := m.(*ipc.VariablesUpdated)
		if !ok {
			t.Fatalf("subscriber got %#v", m)
		}
		sc.received += frameLen(vu)
		for i, n := range vu.Variables {
			seen[n] = vu.Versions[i]
		}
	}
	pushes := uint64(reports + writes)
	waitFor(t, "every notice counted", func() bool {
		st := h.b.Stats()
		return st.NoticesSent+st.NoticesMerged == pushes
	})

	good := filepath.Join(t.TempDir(), "good.toml")
	bad := filepath.Join(t.TempDir(), "bad.toml")
	writeFile(t, good, "[[grant]]\nusers = [0]\ntenants = [\"*\"]\nrights = [\"read\"]\n")
	writeFile(t, bad, "[[grant]]\nusers = [0]\ntenants = [\"*\"]\nrights = [\"fly\"]\n")
	if err := h.b.ReloadPolicy(good); err != nil {
		t.Fatal(err)
	}
	if err := h.b.ReloadPolicy(bad); !errors.Is(err, broker.ErrPolicy) {
		t.Fatalf("reload of a broken policy: %v", err)
	}

	st := h.b.Stats() // nothing moves from here on
	f := newScraper(t, h.b, false).scrape()

	// Requests by type and outcome, and latency samples by type.
	wantReq, wantLat, wantErr := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for k, n := range sc.requests {
		wantReq["outcome="+k[1]+",type="+k[0]] = float64(n)
		wantLat["type="+k[0]] += float64(n)
		if k[1] != "ok" {
			wantErr["code="+k[1]] += float64(n)
		}
	}
	equalSeries(t, "commy_requests_total", f.series("commy_requests_total"), wantReq)
	equalSeries(t, "commy_request_duration_seconds", f.series("commy_request_duration_seconds"), wantLat)
	equalSeries(t, "commy_error_replies_total", f.series("commy_error_replies_total"), wantErr)
	if got := f.mfs["commy_request_duration_seconds"].GetMetric()[0].GetHistogram().GetBucket(); len(got) != len(broker.LatencyBuckets)+1 {
		t.Errorf("%d latency buckets, want %d and +Inf", len(got), len(broker.LatencyBuckets))
	}

	// Connections.
	for name, want := range map[string]float64{
		"commy_connections_open": 3, "commy_connections_accepted_total": 3, "commy_connections_rejected_total": 1,
	} {
		if got := f.value(name, ""); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	// Bytes: everything the clients sent was read; everything they received
	// was written.
	if got := f.value("commy_received_bytes_total", ""); got != float64(sc.sent) {
		t.Errorf("received bytes %v, want %d", got, sc.sent)
	}
	if got := f.value("commy_sent_bytes_total", ""); got != float64(sc.received) {
		t.Errorf("sent bytes %v, want %d", got, sc.received)
	}

	// Notices: each change reached the subscriber, alone or merged.
	sent, merged := f.value("commy_notices_sent_total", ""), f.value("commy_notices_merged_total", "")
	if sent+merged != float64(pushes) || merged == 0 {
		t.Errorf("notices: %v sent + %v merged, want %d with some merged", sent, merged, pushes)
	}

	// Tenants: "a" by name, "b" summed as the rest.
	size := func(path string) float64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return float64(fi.Size())
	}
	if got := f.value("commy_tenants", ""); got != 2 {
		t.Errorf("tenants %v, want 2", got)
	}
	equalSeries(t, "commy_services", f.series("commy_services"), map[string]float64{"tenant=a": 1, "tenant=_other": 1})
	equalSeries(t, "commy_variables", f.series("commy_variables"), map[string]float64{"tenant=a": vars, "tenant=_other": 1})
	equalSeries(t, "commy_service_file_bytes", f.series("commy_service_file_bytes"),
		map[string]float64{"tenant=a": size(svcA.FilePath), "tenant=_other": size(svcB.FilePath)})

	// Audit records by event.
	equalSeries(t, "commy_audit_events_total", f.series("commy_audit_events_total"), map[string]float64{
		"event=connect": 3, "event=disconnect": 0, "event=get_service_file_path": 0, "event=denied": 0,
		"event=write_variable": writes, "event=report_variable_changes": reports, "event=file_access": 0,
		"event=admin":      2 + 2 + vars + 1 + 1, // tenants, services, variables, the policy reload
		"event=suppressed": 0, "event=audit_lost": 0,
	})
	if got := f.value("commy_audit_write_errors_total", ""); got != 0 {
		t.Errorf("audit write errors %v", got)
	}

	// Policy reloads, the probe, the build.
	equalSeries(t, "commy_policy_reloads_total", f.series("commy_policy_reloads_total"), map[string]float64{"result=ok": 1, "result=error": 1})
	if got := f.value("commy_policy_last_reload_successful", ""); got != 0 {
		t.Errorf("last reload successful = %v after a failed reload", got)
	}
	equalSeries(t, "commy_probe_active", f.series("commy_probe_active"), map[string]float64{"attach_point=": 0})
	if got := f.value("commy_build_info", "goversion="+runtime.Version()+",version="+broker.Version); got != 1 {
		t.Errorf("build info %v", got)
	}
	if f.mfs["go_goroutines"] == nil || f.mfs["process_open_fds"] == nil {
		t.Error("no Go runtime or process metrics")
	}

	// Stats reports the same figures.
	var wantStatsErrs uint64
	for _, m := range st.RequestErrors {
		for _, n := range m {
			wantStatsErrs += n
		}
	}
	for _, c := range []struct {
		name string
		got  uint64
		want float64
	}{
		{"bytes_in", st.BytesIn, f.value("commy_received_bytes_total", "")},
		{"bytes_out", st.BytesOut, f.value("commy_sent_bytes_total", "")},
		{"connections_rejected", st.ConnectionsRejected, 1},
		{"notices_sent", st.NoticesSent, sent},
		{"notices_merged", st.NoticesMerged, merged},
		{"policy_reloads", st.PolicyReloads, 1},
		{"policy_reload_errors", st.PolicyReloadErrors, 1},
		{"audit_events.write_variable", st.AuditEvents["write_variable"], writes},
		{"requests.ReadVariable", st.Requests["ReadVariable"], wantLat["type=ReadVariable"]},
		{"request_errors.ReadVariable.VARIABLE_NOT_FOUND", st.RequestErrors["ReadVariable"]["VARIABLE_NOT_FOUND"], missing},
		{"request_errors (sum)", wantStatsErrs, sum(wantErr)},
		{"service_file_bytes", st.ServiceFileBytes, size(svcA.FilePath) + size(svcB.FilePath)},
	} {
		if float64(c.got) != c.want {
			t.Errorf("Stats %s = %d, want %v", c.name, c.got, c.want)
		}
	}
}

func sameVersions(got, want map[string]uint64) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsOff: without Config.Metrics there are no latency histograms,
// and the counters are still there.
func TestMetricsOff(t *testing.T) {
	h := start(t, broker.Config{})
	sc := &score{requests: map[[2]string]uint64{}}
	h.metered(t, sc).do(&ipc.Heartbeat{})
	f := newScraper(t, h.b, false).scrape()
	if f.mfs["commy_request_duration_seconds"] != nil {
		t.Error("latency histograms without Config.Metrics")
	}
	equalSeries(t, "commy_requests_total", f.series("commy_requests_total"),
		map[string]float64{"outcome=ok,type=Hello": 1, "outcome=ok,type=Heartbeat": 1})
	// One tenant label, the default cap is far away: no "_other".
	h.metered(t, sc).do(&ipc.CreateTenant{TenantID: "t"})
	equalSeries(t, "commy_services", newScraper(t, h.b, false).scrape().series("commy_services"), map[string]float64{"tenant=t": 0})
}

// fakeProbe reports the events sent on its channel.
type fakeProbe struct {
	events chan broker.ProbeEvent
	done   chan struct{}
	once   sync.Once
}

func (p *fakeProbe) Watch(string, uint64, uint64) error   { return nil }
func (p *fakeProbe) Unwatch(string, uint64, uint64) error { return nil }
func (p *fakeProbe) Status() broker.ProbeStatus {
	return broker.ProbeStatus{AttachPoint: "security_file_open", Events: 2, Lost: 7}
}

func (p *fakeProbe) Next() (broker.ProbeEvent, error) {
	select {
	case ev := <-p.events:
		return ev, nil
	case <-p.done:
		return broker.ProbeEvent{}, broker.ErrClosed
	}
}

func (p *fakeProbe) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// TestMetricsProbe: the probe's state, its events and what it lost.
func TestMetricsProbe(t *testing.T) {
	p := &fakeProbe{events: make(chan broker.ProbeEvent), done: make(chan struct{})}
	h := start(t, broker.Config{Probe: p})
	for range 2 {
		p.events <- broker.ProbeEvent{PID: 1, Access: "open", Path: "/x"}
	}
	waitFor(t, "probe events", func() bool { return h.b.Stats().ProbeEvents == 2 })
	f := newScraper(t, h.b, false).scrape()
	equalSeries(t, "commy_probe_active", f.series("commy_probe_active"), map[string]float64{"attach_point=security_file_open": 1})
	if got := f.value("commy_probe_events_total", ""); got != 2 {
		t.Errorf("probe events %v, want 2", got)
	}
	if got := f.value("commy_probe_lost_total", ""); got != 7 {
		t.Errorf("probe lost %v, want 7", got)
	}
	if got := f.value("commy_audit_events_total", "event=file_access"); got != 2 {
		t.Errorf("file_access records %v, want 2", got)
	}
}

// TestMetricsPprof: /debug/pprof/ is served only when asked for.
func TestMetricsPprof(t *testing.T) {
	h := start(t, broker.Config{})
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint("pprof=", on), func(t *testing.T) {
			s := newScraper(t, h.b, on)
			want := http.StatusNotFound
			if on {
				want = http.StatusOK
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
				if got := s.get(path).StatusCode; got != want {
					t.Errorf("GET %s: %d, want %d", path, got, want)
				}
			}
			if got := s.get("/metrics").StatusCode; got != http.StatusOK {
				t.Errorf("GET /metrics: %d", got)
			}
		})
	}
}

// BenchmarkMetricsOverhead is a read round trip with and without latency
// histograms: the difference is what Config.Metrics costs a request.
func BenchmarkMetricsOverhead(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprint("metrics=", on), func(b *testing.B) {
			h := startTB(b, broker.Config{Metrics: on})
			r := h.raw(b, true)
			r.do(&ipc.CreateTenant{TenantID: "bench"})
			r.do(&ipc.CreateService{TenantID: "bench", ServiceName: "s"})
			r.do(&ipc.AllocateVariable{ServiceID: "bench_s", VariableName: "v", InitialData: make([]byte, 64)})
			req := &ipc.ReadVariable{ServiceID: "bench_s", VariableName: "v"}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req.ID = 0
				r.do(req)
			}
		})
	}
}
