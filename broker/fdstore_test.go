package broker_test

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/broker"
)

// fdStore keeps duplicates of what the broker stores, as systemd's file
// descriptor store does.
type fdStore struct {
	t     *testing.T
	mu    sync.Mutex
	files map[string]*os.File
}

func newFDStore(t *testing.T) *fdStore {
	s := &fdStore{t: t, files: map[string]*os.File{}}
	t.Cleanup(func() {
		for _, f := range s.files {
			f.Close()
		}
	})
	return s
}

func dupFile(t *testing.T, f *os.File) *os.File {
	t.Helper()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), f.Name())
}

func (s *fdStore) Store(name string, f *os.File) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.files[name]; old != nil {
		old.Close()
	}
	s.files[name] = dupFile(s.t, f)
	return nil
}

func (s *fdStore) Remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[name]; f != nil {
		f.Close()
		delete(s.files, name)
	}
	return nil
}

func (s *fdStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.files))
}

// passed is what the service manager passes a restarted broker: duplicates
// of everything in the store.
func (s *fdStore) passed() []broker.StoredFD {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fds []broker.StoredFD
	for _, name := range slices.Sorted(maps.Keys(s.files)) {
		fds = append(fds, broker.StoredFD{Name: name, File: dupFile(s.t, s.files[name])})
	}
	return fds
}

// TestFDStoreRestart stores a memfd broker's tenants and services, restarts
// it from the store, and finds every acknowledged write.
func TestFDStoreRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	store := newFDStore(t)
	cfg := broker.Config{Backend: broker.BackendMemfd, FDStore: store}
	h := start(t, cfg)
	c := h.dial(t)
	for _, id := range []string{"acme", "spare"} {
		if err := c.CreateTenant(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := c.CreateService(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 300<<10)
	if _, err := svc.Allocate(ctx, "big", big, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Allocate(ctx, "count", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Write(ctx, "count", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateService(ctx, "acme", "gone"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteService(ctx, "acme", "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateService(ctx, "dropped", "x"); err == nil {
		t.Fatal("a service in a missing tenant")
	}
	first := store.names()
	if len(first) != 3 || first[0] != "commy-service/acme/orders/"+inode(t, store.files[first[0]]) ||
		first[1] != "commy-tenant/acme" || first[2] != "commy-tenant/spare" {
		t.Fatalf("stored %q", first)
	}
	original := store.passed() // the memfd as the first broker left it
	defer func() {
		for _, fd := range original {
			fd.File.Close()
		}
	}()
	c.Close()
	h.stop(t)

	cfg.Restore = store.passed()
	h = start(t, cfg)
	c = h.dial(t)
	if ids, err := c.Tenants(ctx); err != nil || !slices.Equal(ids, []string{"acme", "spare"}) {
		t.Fatalf("tenants after restart: %q %v", ids, err)
	}
	if infos, err := c.Services(ctx, "acme"); err != nil || len(infos) != 1 || infos[0].ServiceName != "orders" {
		t.Fatalf("services after restart: %+v %v", infos, err)
	}
	svc, err = c.Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	if got, v, err := svc.Read(ctx, "count"); err != nil || string(got) != "2" || v != 2 {
		t.Fatalf("count after restart: %q v%d %v", got, v, err)
	}
	if got, _, err := svc.Read(ctx, "big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big after restart: %d bytes %v", len(got), err)
	}
	// The restored copy is a new memfd: clients map it, and it replaced the
	// original in the store.
	m, err := svc.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.Local() {
		t.Fatal("restored service not mapped")
	}
	if _, err := svc.Write(ctx, "count", []byte("3")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if got, _, err := m.Read("count", buf); err != nil || string(got) != "3" {
		t.Fatalf("mapped count: %q %v", got, err)
	}
	second := store.names()
	if len(second) != 3 || second[0] == first[0] || !strings.HasPrefix(second[0], "commy-service/acme/orders/") ||
		!slices.Equal(second[1:], first[1:]) {
		t.Fatalf("stored after restart %q, before %q", second, first)
	}

	// Deleting a tenant drops it and its services from the store.
	if err := c.DeleteTenant(ctx, "spare"); err != nil {
		t.Fatal(err)
	}
	if got := store.names(); len(got) != 2 || slices.Contains(got, "commy-tenant/spare") {
		t.Fatalf("stored after DeleteTenant %q", got)
	}
	c.Close()
	h.stop(t)

	// A crash between storing a restored copy and removing the original
	// leaves both: the one that saw more changes wins, the other goes.
	cfg.Restore = append(store.passed(), broker.StoredFD{Name: original[0].Name, File: dupFile(t, original[0].File)})
	store.Store(original[0].Name, original[0].File)
	h = start(t, cfg)
	c = h.dial(t)
	svc, err = c.Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := svc.Read(ctx, "count"); err != nil || string(got) != "3" {
		t.Fatalf("count from the newer copy: %q %v", got, err)
	}
	if got := store.names(); len(got) != 2 || slices.Contains(got, original[0].Name) {
		t.Fatalf("stored after restoring two copies %q", got)
	}
}

func inode(t *testing.T, f *os.File) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(st.Ino, 10)
}

// TestFDStoreBadDescriptors passes what the broker cannot use: each is
// logged and counted, left in the store, and closed.
func TestFDStoreBadDescriptors(t *testing.T) {
	store := newFDStore(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var logs syncBuffer
	h := start(t, broker.Config{Backend: broker.BackendMemfd, FDStore: store,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Restore: []broker.StoredFD{
			{Name: "commy-service/acme/orders/1", File: r},
			{Name: "commy-tenant/bad_name", File: dupFile(t, w)},
			{Name: "other.socket", File: dupFile(t, w)},
		}})
	if n := newScraper(t, h.b, false).scrape().value("commy_recover_errors_total", ""); n != 2 {
		t.Errorf("%v recover errors, want 2", n)
	}
	for _, want := range []string{"not a sealable memfd", "tenant id \\\"bad_name\\\"", "unknown name"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if got := store.names(); len(got) != 0 {
		t.Errorf("stored %q", got)
	}
	if _, err := r.Stat(); err == nil {
		t.Error("a passed descriptor left open")
	}

	// The file backend ignores the memfd store but closes what it is given.
	f := dupFile(t, w)
	start(t, broker.Config{Restore: []broker.StoredFD{{Name: "commy-tenant/acme", File: f}}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := f.Stat(); err == nil {
		t.Error("a passed descriptor left open by the file backend")
	}
	if !strings.Contains(logs.String(), "the backend is not memfd") {
		t.Errorf("log:\n%s", logs.String())
	}
}
