package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/brokertest"
	"github.com/commy/commy/internal/ebpf"
	"github.com/commy/commy/internal/testutil"
	"golang.org/x/sys/unix"
)

// touchChild opens COMMY_PATH read-only and, with COMMY_MMAP set, maps it;
// then opens COMMY_ALSO if set. It exits 0 whether or not the open worked.
func touchChild() int {
	fd, err := unix.Open(os.Getenv("COMMY_PATH"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil && os.Getenv("COMMY_MMAP") != "" {
		if mem, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED); err == nil {
			unix.Munmap(mem)
		}
	}
	if err == nil {
		unix.Close(fd)
	}
	if also := os.Getenv("COMMY_ALSO"); also != "" {
		if f, err := os.Open(also); err == nil {
			f.Close()
		}
	}
	fmt.Println(err)
	return 0
}

// TestEBPFAudit runs a broker with the eBPF probe and checks the audit log
// records every access to a service file, by pid, uid, command and service:
// a refused open by path as uid 65534, an open and mmap by path as root, and
// a client mapping the descriptor the broker passed; and none for an
// unrelated file beside it.
func TestEBPFAudit(t *testing.T) {
	testutil.RequireRoot(t)
	p, err := ebpf.Load(ebpf.Options{})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("the eBPF probe is not supported here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, sock := brokertest.Serve(t, broker.Config{Probe: probeAdapter{p}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	data := filepath.Join(filepath.Dir(sock), "data")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	c.CreateTenant(ctx, "acme")
	svc, err := c.CreateService(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	svc.Allocate(ctx, "v", []byte("x"), 0)
	c.Close()
	svcPath := filepath.Join(data, "tenants", "acme", "orders.mem")
	unrelated := filepath.Join(data, "tenants", "acme", "unrelated.txt")
	if err := os.WriteFile(unrelated, []byte("nothing to see"), 0o600); err != nil {
		t.Fatal(err)
	}

	run := func(cmd *exec.Cmd) int {
		t.Helper()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd.Args, err)
		}
		t.Logf("pid %d: %s", cmd.Process.Pid, strings.TrimSpace(string(out)))
		return cmd.Process.Pid
	}
	denied := run(testutil.Child(t, "touch", testutil.Nobody, testutil.Nobody, "COMMY_PATH="+svcPath))
	byPath := run(testutil.Child(t, "touch", -1, -1, "COMMY_PATH="+svcPath, "COMMY_MMAP=1", "COMMY_ALSO="+unrelated))
	mapper := testutil.Child(t, "commy", -1, -1, "COMMY_SOCKET="+sock)
	mapper.Args = append(mapper.Args, "get", "--mapped", "acme/orders", "v")
	mapped := run(mapper)

	// Wait for the events to reach the log, then flush it.
	deadline := time.Now().Add(10 * time.Second)
	for b.Stats().ProbeEvents < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.Close(); err != nil { // flushes the audit log
		t.Fatal(err)
	}

	comm := filepath.Base(os.Args[0])
	comm = comm[:min(len(comm), 15)]
	type seen struct{ open, mmap, openByPath bool }
	got := map[int]*seen{denied: {}, byPath: {}, mapped: {}}
	f, err := os.Open(filepath.Join(data, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = broker.ReadAudit(f, func(r broker.Record) error {
		if r.Event != broker.EventFileAccess {
			return nil
		}
		if r.Path == unrelated {
			t.Errorf("event for an unrelated file: %+v", r)
		}
		s := got[int(r.PID)]
		if s == nil {
			return nil
		}
		if r.ServiceID != "acme_orders" || r.Comm != comm || r.Result == nil {
			t.Errorf("record %+v: want service acme_orders, comm %q", r, comm)
		}
		wantUID := uint32(0)
		if int(r.PID) == denied {
			wantUID = testutil.Nobody
		}
		if r.UID == nil || *r.UID != wantUID {
			t.Errorf("record %+v: want uid %d", r, wantUID)
		}
		switch {
		case strings.HasPrefix(r.Access, "open"):
			s.open = true
			s.openByPath = s.openByPath || r.Path == svcPath
			if int(r.PID) == denied && *r.Result != -int64(unix.EACCES) {
				t.Errorf("refused open: result %d", *r.Result)
			}
		case strings.HasPrefix(r.Access, "mmap"):
			s.mmap = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := got[denied]; !s.open || !s.openByPath || s.mmap {
		t.Errorf("uid 65534 refused open: %+v", *s)
	}
	if s := got[byPath]; !s.open || !s.openByPath || !s.mmap {
		t.Errorf("root open and mmap by path: %+v", *s)
	}
	if s := got[mapped]; s.openByPath || !s.mmap {
		t.Errorf("client mapping the passed descriptor: %+v", *s)
	}
}
