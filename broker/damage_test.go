package broker_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// TestReportRepeatedName: a report naming one variable twice is the
// client's mistake: INVALID_REQUEST, nothing applied, nothing logged at error
// level (any writer could otherwise fill the broker's error log).
func TestReportRepeatedName(t *testing.T) {
	var logs syncBuffer
	h := start(t, broker.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	r := h.raw(t, true)
	r.do(&ipc.CreateTenant{TenantID: "acme"})
	r.do(&ipc.CreateService{TenantID: "acme", ServiceName: "svc"})
	r.do(&ipc.AllocateVariable{ServiceID: "acme_svc", VariableName: "a", InitialData: []byte("0")})
	rep := r.do(&ipc.ReportVariableChanges{ServiceID: "acme_svc", ChangedVariables: []string{"a", "a"},
		NewValues: []ipc.NamedValue{{Name: "a", Value: []byte("1")}, {Name: "a", Value: []byte("2")}}})
	if c := code(rep); c != "INVALID_REQUEST" {
		t.Fatalf("repeated name: %#v", rep)
	}
	if rd := r.do(&ipc.ReadVariable{ServiceID: "acme_svc", VariableName: "a"}).(*ipc.VariableData); string(rd.Data) != "0" || rd.Version != 1 {
		t.Fatalf("a = %q v%d after a refused report", rd.Data, rd.Version)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a client's mistake logged as an error:\n%s", logs.String())
	}
}

// damage is how a test breaks a service file under the running broker.
type damage struct {
	name string
	do   func(t *testing.T, path string)
}

var damages = []damage{
	{"slot offset", func(t *testing.T, path string) {
		// Entry 0's slot 0 offset (dir at 4096, slot0_offset at +0x10) far
		// past the file.
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], 1<<40)
		if _, err := f.WriteAt(b[:], 4096+0x10); err != nil {
			t.Fatal(err)
		}
	}},
	{"unaligned slot", func(t *testing.T, path string) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var b [8]byte
		if _, err := f.ReadAt(b[:], 4096+0x10); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint64(b[:], binary.LittleEndian.Uint64(b[:])+8) // not on a 64-byte boundary
		if _, err := f.WriteAt(b[:], 4096+0x10); err != nil {
			t.Fatal(err)
		}
	}},
	{"truncated", func(t *testing.T, path string) {
		// The values' pages go: the broker's next access faults (SIGBUS).
		if err := os.Truncate(path, 8192); err != nil {
			t.Fatal(err)
		}
	}},
}

// TestDamagedServiceQuarantined: a service file broken under the running
// broker never takes it down. The request that finds the damage and every
// later one on that service get SERVICE_DAMAGED; the broker logs it once and
// counts it; another service keeps serving.
func TestDamagedServiceQuarantined(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			var logs syncBuffer
			h := start(t, broker.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			r := h.raw(t, true)
			r.do(&ipc.CreateTenant{TenantID: "acme"})
			for _, s := range []string{"bad", "good"} {
				r.do(&ipc.CreateService{TenantID: "acme", ServiceName: s})
				for _, v := range []string{"v", "w"} { // w's slot follows v's
					if rep := r.do(&ipc.AllocateVariable{ServiceID: "acme_" + s, VariableName: v, InitialData: []byte("0")}); code(rep) != "" {
						t.Fatal(rep)
					}
				}
			}
			sp, ok := r.do(&ipc.GetService{TenantID: "acme", ServiceName: "bad"}).(*ipc.Service)
			if !ok {
				t.Fatal("GetService failed")
			}
			d.do(t, sp.FilePath)
			if rep := r.do(&ipc.WriteVariable{ServiceID: "acme_bad", VariableName: "v", Data: []byte("1")}); code(rep) != "SERVICE_DAMAGED" {
				t.Fatalf("write to the damaged service: %v", rep)
			}
			for _, req := range []ipc.Message{
				&ipc.ReadVariable{ServiceID: "acme_bad", VariableName: "v"},
				&ipc.ListVariables{ServiceID: "acme_bad"},
				&ipc.AllocateVariable{ServiceID: "acme_bad", VariableName: "x", InitialData: []byte("0")},
			} {
				if rep := r.do(req); code(rep) != "SERVICE_DAMAGED" {
					t.Fatalf("%s on the quarantined service: %v", req.Kind(), rep)
				}
			}
			if rep := r.do(&ipc.WriteVariable{ServiceID: "acme_good", VariableName: "v", Data: []byte("1")}); code(rep) != "" {
				t.Fatalf("write to the good service: %v", rep)
			}
			if rd, ok := r.do(&ipc.ReadVariable{ServiceID: "acme_good", VariableName: "v"}).(*ipc.VariableData); !ok || string(rd.Data) != "1" {
				t.Fatalf("read of the good service: %v", rd)
			}
			if n := newScraper(t, h.b, false).scrape().value("commy_service_files_damaged_total", ""); n != 1 {
				t.Errorf("%v damaged files counted, want 1", n)
			}
			if n := strings.Count(logs.String(), "service quarantined"); n != 1 {
				t.Errorf("quarantine logged %d times:\n%s", n, logs.String())
			}
			// The quarantined service can still be deleted.
			if rep := r.do(&ipc.DeleteService{TenantID: "acme", ServiceName: "bad"}); code(rep) != "" {
				t.Fatalf("delete the quarantined service: %v", rep)
			}
		})
	}
}

// TestDeleteServiceMapped: deleting a service marks its file, so a client
// holding a mapping gets ErrServiceDeleted (which also matches
// ErrServiceNotFound) instead of stale values, and a Wait sleeping on it
// wakes.
func TestDeleteServiceMapped(t *testing.T) {
	for _, backend := range []string{broker.BackendFile, broker.BackendMemfd} {
		t.Run(backend, func(t *testing.T) {
			h := start(t, broker.Config{Backend: backend})
			c := h.dial(t)
			ctx := t.Context()
			if err := c.CreateTenant(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			svc, err := c.CreateService(ctx, "acme", "svc")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Allocate(ctx, "v", []byte("1"), 0); err != nil {
				t.Fatal(err)
			}
			m, err := svc.Map(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			done := make(chan error, 1)
			seq := m.ChangeSeq()
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			go func() {
				_, err := m.Wait(wctx, seq)
				done <- err
			}()
			if err := c.DeleteService(ctx, "acme", "svc"); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, client.ErrServiceDeleted) {
					t.Fatalf("Wait: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Wait not woken by the deletion")
			}
			_, _, err = m.Read("v", nil)
			if !errors.Is(err, client.ErrServiceDeleted) || !errors.Is(err, client.ErrServiceNotFound) {
				t.Fatalf("mapped read after the deletion: %v", err)
			}
			if _, err := m.Wait(ctx, m.ChangeSeq()); !errors.Is(err, client.ErrServiceDeleted) {
				t.Fatalf("Wait after the deletion: %v", err)
			}
		})
	}
}

// TestRecoverDeletedMark: a file marked deleted by a broker that died before
// removing it is removed at the next start, not served again.
func TestRecoverDeletedMark(t *testing.T) {
	h := start(t, broker.Config{})
	r := h.raw(t, true)
	r.do(&ipc.CreateTenant{TenantID: "acme"})
	sp, ok := r.do(&ipc.CreateService{TenantID: "acme", ServiceName: "svc"}).(*ipc.Service)
	if !ok {
		t.Fatal("CreateService failed")
	}
	h.stop(t)
	f, err := shm.Open(sp.FilePath)
	if err != nil {
		t.Fatal(err)
	}
	f.MarkDeleted() // and the broker dies before removing the file
	f.Close()
	h2 := startIn(t, broker.Config{DataDir: h.dataDir}, h.sock+"2")
	if rep := h2.raw(t, true).do(&ipc.GetService{TenantID: "acme", ServiceName: "svc"}); code(rep) != "SERVICE_NOT_FOUND" {
		t.Fatalf("a service marked deleted came back: %v", rep)
	}
	if _, err := os.Stat(sp.FilePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("its file: %v", err)
	}
}

// TestRestoreDeletedMark: a memfd in the fd store marked deleted (the broker
// died between marking it and dropping it from the store) is dropped from
// the store at the next start, not served again and not counted as an error.
func TestRestoreDeletedMark(t *testing.T) {
	f, err := shm.CreateMemfd("acme", "gone", shm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.MarkDeleted()
	ro, err := f.OpenReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	store := newFDStore(t)
	store.Store("commy-tenant/acme", ro)
	store.Store("commy-service/acme/gone/1", ro)
	ro.Close()
	h := start(t, broker.Config{Backend: broker.BackendMemfd, FDStore: store, Restore: store.passed()})
	if rep := h.raw(t, true).do(&ipc.GetService{TenantID: "acme", ServiceName: "gone"}); code(rep) != "SERVICE_NOT_FOUND" {
		t.Fatalf("a service marked deleted came back: %v", rep)
	}
	for _, n := range store.names() {
		if strings.HasPrefix(n, "commy-service/") {
			t.Fatalf("still stored: %v", store.names())
		}
	}
	if n := newScraper(t, h.b, false).scrape().value("commy_recover_errors_total", ""); n != 0 {
		t.Errorf("%v recover errors", n)
	}
}
