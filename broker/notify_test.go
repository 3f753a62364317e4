package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
)

// TestReportVariableChanges is the seed guide's test: a report is
// acknowledged, visible through a mapping and ReadVariable, and a
// VariablesUpdated push reaches a second subscribed connection but not the
// sender.
func TestReportVariableChanges(t *testing.T) {
	h := start(t, broker.Config{})
	ctx := t.Context()
	sender, watcher := h.raw(t, true), h.raw(t, true)
	sender.do(&ipc.CreateTenant{TenantID: "acme"})
	sender.do(&ipc.CreateService{TenantID: "acme", ServiceName: "svc"})
	for _, n := range []string{"a", "b", "c"} {
		sender.do(&ipc.AllocateVariable{ServiceID: "acme_svc", VariableName: n, InitialData: []byte("0")})
	}
	for _, r := range []*raw{sender, watcher} {
		if rep := r.do(&ipc.Subscribe{ServiceID: "acme_svc"}); rep.Kind() != "Subscribed" {
			t.Fatal(rep)
		}
	}
	mc := h.dial(t)
	svc, err := mc.Service(ctx, "acme", "svc")
	if err != nil {
		t.Fatal(err)
	}
	m, err := svc.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ack := sender.do(&ipc.ReportVariableChanges{ServiceID: "acme_svc", ChangedVariables: []string{"a", "c"},
		NewValues: []ipc.NamedValue{{Name: "a", Value: []byte("new a")}, {Name: "c", Value: bytes.Repeat([]byte("c"), 3000)}}})
	va, ok := ack.(*ipc.VariableChangesAcknowledged)
	if !ok || va.ServiceID != "acme_svc" || !slices.Equal(va.ChangedVariables, []string{"a", "c"}) {
		t.Fatalf("ack %#v", ack)
	}
	if got, v, err := m.Read("a", nil); err != nil || string(got) != "new a" || v != 2 {
		t.Fatalf("mapped a = %q v%d %v", got, v, err)
	}
	if got, _, _ := m.Read("c", nil); len(got) != 3000 {
		t.Fatalf("mapped c: %d bytes", len(got))
	}
	if rd := sender.do(&ipc.ReadVariable{ServiceID: "acme_svc", VariableName: "a"}).(*ipc.VariableData); string(rd.Data) != "new a" {
		t.Fatalf("ReadVariable a = %q", rd.Data)
	}
	push := watcher.recv()
	vu, ok := push.(*ipc.VariablesUpdated)
	if !ok || vu.ID != 0 || vu.ServiceID != "acme_svc" || !slices.Equal(vu.Variables, []string{"a", "c"}) || !slices.Equal(vu.Versions, []uint64{2, 2}) {
		t.Fatalf("push %#v", push)
	}
	// The sender gets no push: the next frame it sees is its heartbeat reply.
	if rep := sender.do(&ipc.Heartbeat{}); rep.Kind() != "Heartbeat" {
		t.Fatal(rep)
	}
	sender.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if body, err := sender.conn.ReadFrame(); err == nil {
		m, _, _ := ipc.Decode(body)
		t.Fatalf("sender got %#v", m)
	}
	// A filtered subscription only hears about its variables.
	watcher.do(&ipc.Subscribe{ServiceID: "acme_svc", Variables: []string{"b"}})
	sender.do(&ipc.WriteVariable{ServiceID: "acme_svc", VariableName: "a", Data: []byte("x")})
	sender.do(&ipc.WriteVariable{ServiceID: "acme_svc", VariableName: "b", Data: []byte("y")})
	if vu := watcher.recv().(*ipc.VariablesUpdated); !slices.Equal(vu.Variables, []string{"b"}) {
		t.Fatalf("filtered push %#v", vu)
	}
}

// TestMappedReadersDuringWrites: a client hammers one variable through the
// broker while readers on mappings check every copy is whole.
func TestMappedReadersDuringWrites(t *testing.T) {
	h := start(t, broker.Config{})
	ctx := t.Context()
	w := h.dial(t)
	w.CreateTenant(ctx, "t")
	svc, _ := w.CreateService(ctx, "t", "s")
	svc.Allocate(ctx, "hot", []byte{1}, 0)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 2; i++ {
		m, err := svc.Map(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, _, err := m.Read("hot", buf)
				if err != nil {
					t.Error(err)
					return
				}
				for _, c := range b {
					if c != byte(len(b)) {
						t.Errorf("torn read of %d bytes", len(b))
						return
					}
				}
				buf = b
				runtime.Gosched() // two vCPUs: leave the writer and the broker room
			}
		}()
	}
	for i := 1; i < 1500; i++ {
		n := 1 + i%700
		if _, err := svc.Write(ctx, "hot", bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestSlowSubscriber: a subscriber that never reads does not slow the broker
// or other clients, and when it reads again it gets every change, merged,
// at its latest version.
func TestSlowSubscriber(t *testing.T) {
	h := start(t, broker.Config{})
	ctx := t.Context()
	c := h.dial(t)
	c.CreateTenant(ctx, "t")
	svc, _ := c.CreateService(ctx, "t", "s")
	const vars = 50
	for i := 0; i < vars; i++ {
		svc.Allocate(ctx, fmt.Sprintf("v%02d", i), nil, 0)
	}
	slow := h.raw(t, true)
	slow.do(&ipc.Subscribe{ServiceID: "t_s"})
	// Fill the socket buffers and beyond: the slow side reads nothing.
	payload := bytes.Repeat([]byte("p"), 512)
	const rounds = 200
	done := make(chan error, 1)
	go func() {
		for r := 0; r < rounds; r++ {
			for i := 0; i < vars; i++ {
				if _, err := svc.Write(ctx, fmt.Sprintf("v%02d", i), payload); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("writer blocked behind a slow subscriber")
	}
	// Another client is served promptly.
	other := h.dial(t)
	if _, err := other.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	// Now drain: the last version seen of every variable is the final one.
	latest := map[string]uint64{}
	deadline := time.Now().Add(20 * time.Second)
	for len(latest) < vars || !allAt(latest, rounds+1) {
		if time.Now().After(deadline) {
			t.Fatalf("missing changes: %v", latest)
		}
		vu, ok := slow.recv().(*ipc.VariablesUpdated)
		if !ok {
			continue
		}
		for i, n := range vu.Variables {
			if vu.Versions[i] < latest[n] {
				t.Fatalf("%s went back from v%d to v%d", n, latest[n], vu.Versions[i])
			}
			latest[n] = vu.Versions[i]
		}
	}
	st, _ := c.Stats(ctx)
	if st.NoticesMerged == 0 {
		t.Fatalf("no notices were merged: %+v", st)
	}
	t.Logf("sent %d notices, merged %d", st.NoticesSent, st.NoticesMerged)
}

func allAt(m map[string]uint64, v uint64) bool {
	for _, x := range m {
		if x != v {
			return false
		}
	}
	return true
}

// TestDescriptorFlood: descriptors sent to the broker are closed at once and
// the connection ends with PROTOCOL_ERROR; the broker keeps none.
func TestDescriptorFlood(t *testing.T) {
	h := start(t, broker.Config{})
	before := countFDs(t)
	r := h.raw(t, true)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	frame := mustFrame(&ipc.Heartbeat{Header: ipc.Header{ID: 5}})
	for i := 0; i < 50; i++ {
		if r.conn.WriteFrame(frame, f) != nil {
			break
		}
	}
	var got ipc.Message
	for {
		r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		body, err := r.conn.ReadFrame()
		if err != nil {
			break
		}
		got, _, _ = ipc.Decode(body)
	}
	if code(got) != "PROTOCOL_ERROR" {
		t.Fatalf("last reply %#v", got)
	}
	r.conn.Close()
	// Only the test's own descriptors remain once the session is gone.
	deadline := time.Now().Add(5 * time.Second)
	for countFDs(t) > before+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := countFDs(t); n > before+1 {
		t.Fatalf("%d descriptors before, %d after", before, n)
	}
	if _, err := h.dial(t).Heartbeat(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestConnectionLimit refuses connections past the limit without disturbing
// the ones it serves.
func TestConnectionLimit(t *testing.T) {
	h := start(t, broker.Config{MaxConnections: 2})
	a, b := h.dial(t), h.dial(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if c, err := client.Dial(ctx, h.sock); err == nil {
		c.Close()
		t.Fatal("third connection served")
	}
	for _, c := range []*client.Client{a, b} {
		if _, err := c.Heartbeat(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := client.Dial(t.Context(), h.sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHandshakeTimeout drops a connection that never says Hello.
func TestHandshakeTimeout(t *testing.T) {
	h := start(t, broker.Config{HandshakeTimeout: 200 * time.Millisecond})
	conn, err := ipc.Dial(h.sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	body, err := conn.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if m, _, _ := ipc.Decode(body); code(m) != "PROTOCOL_ERROR" {
		t.Fatalf("got %#v", m)
	}
}

// TestAuditLog checks the records a session leaves.
func TestAuditLog(t *testing.T) {
	h := start(t, broker.Config{})
	ctx := t.Context()
	c := h.dial(t)
	c.CreateTenant(ctx, "t")
	svc, _ := c.CreateService(ctx, "t", "s")
	svc.Allocate(ctx, "v", []byte("secret-value"), 0)
	svc.Write(ctx, "v", []byte("another-secret"))
	svc.Report(ctx, []client.NamedValue{{Name: "v", Value: []byte("third-secret")}})
	m, _ := svc.Map(ctx)
	m.Close()
	c.Close()
	h.stop(t)
	data, err := os.ReadFile(filepath.Join(h.dataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "secret") {
		t.Fatal("audit log holds values")
	}
	var events []string
	broker.ReadAudit(bytes.NewReader(data), func(r broker.Record) error {
		if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil || !strings.Contains(r.Time, ".") {
			t.Errorf("time %q", r.Time)
		}
		if r.PID != int32(os.Getpid()) {
			t.Errorf("pid %d in %+v", r.PID, r)
		}
		switch r.Event {
		case broker.EventConnect:
			if r.Exe == "" {
				t.Errorf("connect without exe: %+v", r)
			}
		case broker.EventWrite:
			if r.Bytes != len("another-secret") || !slices.Equal(r.Variables, []string{"v"}) {
				t.Errorf("write record %+v", r)
			}
		case broker.EventReport:
			if r.Bytes != len("third-secret") {
				t.Errorf("report record %+v", r)
			}
		}
		events = append(events, r.Event+":"+r.Request)
		return nil
	})
	want := []string{"connect:", "admin:CreateTenant", "admin:CreateService", "admin:AllocateVariable",
		"write_variable:", "report_variable_changes:", "get_service_file_path:", "disconnect:"}
	if !slices.Equal(events, want) {
		t.Fatalf("events\n%v\nwant\n%v", events, want)
	}
}

// TestAuditDiskFull writes the audit log to /dev/full: every failed write is
// logged at error level and counted, and requests still succeed.
func TestAuditDiskFull(t *testing.T) {
	var logs syncBuffer
	h := start(t, broker.Config{AuditLog: "/dev/full", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := h.dial(t)
	if err := c.CreateTenant(t.Context(), "t"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.b.Stats().AuditErrors < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.b.Stats().AuditErrors; n < 2 {
		t.Fatalf("%d audit errors counted", n)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"audit log write failed") {
		t.Fatalf("not logged:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStalledReader: a client that sends requests but reads nothing, then
// shuts down its sending side, is dropped once writes to it have waited the
// write timeout, instead of holding its session forever; so is a subscriber
// that stops reading.
func TestStalledReader(t *testing.T) {
	h := start(t, broker.Config{WriteTimeout: 300 * time.Millisecond})
	ctx := t.Context()
	c := h.dial(t)
	c.CreateTenant(ctx, "t")
	svc, _ := c.CreateService(ctx, "t", "s")
	svc.Allocate(ctx, "v", bytes.Repeat([]byte("x"), 1<<20), 0)

	stalled := h.raw(t, true)
	stalled.do(&ipc.Subscribe{ServiceID: "t_s"})
	read := mustFrame(&ipc.ReadVariable{Header: ipc.Header{ID: 1000}, ServiceID: "t_s", VariableName: "v"})
	for i := 0; i < 16; i++ { // 16 MiB of replies nobody reads
		if err := stalled.conn.WriteFrame(read, nil); err != nil {
			t.Fatal(err)
		}
	}
	stalled.conn.UnixConn().CloseWrite()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Connections == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stalled client still holds a session: %d connections", st.Connections)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The broker serves on.
	if _, _, err := svc.Read(ctx, "v"); err != nil {
		t.Fatal(err)
	}
}

// TestWideFanout: a change with more subscribers than one goroutine writes
// (the writer hands half of them to a fan-out helper) reaches every one of
// them, each in order, through many writes in a row.
func TestWideFanout(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2)) // a helper exists without io_uring
	fanoutWays(t, testWideFanout)
}

// fanoutWays runs a fan-out test through io_uring (where the kernel has it,
// checking that the broker used it) and with one sendto per subscriber.
func fanoutWays(t *testing.T, f func(t *testing.T, cfg broker.Config)) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-io-uring=%v", off), func(t *testing.T) {
			uring := !off && ipc.IOURing() == nil
			before := ipc.IOURingSends()
			f(t, broker.Config{NoIOURing: off})
			if n := ipc.IOURingSends() - before; uring != (n > 0) {
				t.Fatalf("%d notices through io_uring (io_uring available: %v)", n, uring)
			}
		})
	}
}

func testWideFanout(t *testing.T, cfg broker.Config) {
	h := start(t, cfg)
	ctx := t.Context()
	c := h.dial(t)
	c.CreateTenant(ctx, "t")
	svc, _ := c.CreateService(ctx, "t", "s")
	if _, err := svc.Allocate(ctx, "v", []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	const subs, writes = 200, 50
	final := uint64(writes + 1)
	errs := make(chan error, subs)
	var wg sync.WaitGroup
	for range subs {
		r := h.raw(t, true)
		r.do(&ipc.Subscribe{ServiceID: "t_s"})
		wg.Go(func() {
			var last uint64
			for last < final {
				r.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
				body, err := r.conn.ReadFrame()
				if err != nil {
					errs <- fmt.Errorf("after v%d: %w", last, err)
					return
				}
				m, _, err := ipc.Decode(body)
				vu, ok := m.(*ipc.VariablesUpdated)
				if err != nil || !ok || len(vu.Versions) != 1 {
					errs <- fmt.Errorf("after v%d: %#v %v", last, m, err)
					return
				}
				if vu.Versions[0] <= last {
					errs <- fmt.Errorf("v%d after v%d", vu.Versions[0], last)
					return
				}
				last = vu.Versions[0]
			}
		})
	}
	for i := range writes {
		if _, err := svc.Write(ctx, "v", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFanoutFiltered: when one change owes notices to many subscribers,
// written together (one batch, through io_uring where the kernel has it),
// each gets its own: a subscriber filtering on one variable hears of that
// one only, one taking all of them hears of every one.
func TestFanoutFiltered(t *testing.T) { fanoutWays(t, testFanoutFiltered) }

func testFanoutFiltered(t *testing.T, cfg broker.Config) {
	h := start(t, cfg)
	ctx := t.Context()
	c := h.dial(t)
	c.CreateTenant(ctx, "t")
	svc, _ := c.CreateService(ctx, "t", "s")
	const vars, rounds = 12, 20
	names := make([]string, vars)
	for i := range names {
		names[i] = fmt.Sprint("v", i)
		if _, err := svc.Allocate(ctx, names[i], []byte("0"), 0); err != nil {
			t.Fatal(err)
		}
	}
	type sub struct {
		r     *raw
		names []string // the variables it hears of, in the notices' order
	}
	var subs []sub
	for i := range vars {
		subs = append(subs, sub{h.raw(t, true), names[i : i+1]})
	}
	subs = append(subs, sub{h.raw(t, true), nil}, sub{h.raw(t, true), []string{names[3], names[7]}})
	for _, s := range subs {
		if rep := s.r.do(&ipc.Subscribe{ServiceID: "t_s", Variables: s.names}); rep.Kind() != "Subscribed" {
			t.Fatal(rep)
		}
	}
	subs[vars].names = names
	for round := range rounds {
		vals := make([]client.NamedValue, vars)
		for i, n := range names {
			vals[i] = client.NamedValue{Name: n, Value: []byte(fmt.Sprint(round))}
		}
		if err := svc.Report(ctx, vals); err != nil {
			t.Fatal(err)
		}
		want := uint64(round + 2)
		for i, s := range subs {
			m := s.r.recv()
			vu, ok := m.(*ipc.VariablesUpdated)
			if !ok || !slices.Equal(vu.Variables, s.names) || len(vu.Versions) != len(s.names) {
				t.Fatalf("round %d: subscriber %d (of %v) got %#v", round, i, s.names, m)
			}
			for _, v := range vu.Versions {
				if v != want {
					t.Fatalf("round %d: subscriber %d got versions %v, want %d", round, i, vu.Versions, want)
				}
			}
		}
	}
}
