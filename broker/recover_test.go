package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/testutil"
)

// startChild runs a broker process (serveChild) and waits until it listens.
func startChild(t *testing.T, sock, data string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := testutil.Child(t, "serve", -1, -1, append([]string{"COMMY_SOCK=" + sock, "COMMY_DATA=" + data}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("broker child: %q %v", line, err)
	}
	return cmd
}

// value is what writer w puts in its variable at version v: its size varies
// so values move between slots of different capacity.
func value(w int, v uint64) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("w%d-v%d;", w, v)), 1+int(v%97)*13)
}

// TestRecoverAfterKill9 kills a broker process with SIGKILL while clients
// write, restarts it on the same data directory, and checks every
// acknowledged write is there.
func TestRecoverAfterKill9(t *testing.T) {
	dir, err := os.MkdirTemp("", "commy-k")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, data := filepath.Join(dir, "s.sock"), filepath.Join(dir, "data")
	cmd := startChild(t, sock, data)
	ctx := t.Context()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	c.CreateTenant(ctx, "acme")
	svc, err := c.CreateService(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	const writers = 4
	for w := 0; w < writers; w++ {
		if _, err := svc.Allocate(ctx, fmt.Sprintf("w%d", w), value(w, 1), 0); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()

	type state struct{ acked uint64 }
	acked := make([]state, writers)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Dial(ctx, sock)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			s, err := c.Service(ctx, "acme", "orders")
			if err != nil {
				t.Error(err)
				return
			}
			acked[w].acked = 1
			for v := uint64(2); ; v++ {
				got, err := s.Write(ctx, fmt.Sprintf("w%d", w), value(w, v))
				if err != nil {
					return // the broker died
				}
				if got != v {
					t.Errorf("writer %d: version %d, want %d", w, got, v)
					return
				}
				acked[w].acked = v
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	wg.Wait()

	cmd = startChild(t, sock, data)
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	c, err = client.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for w := 0; w < writers; w++ {
		a := acked[w].acked
		if a < 10 {
			t.Errorf("writer %d only got %d writes in", w, a)
		}
		got, v, err := s.Read(ctx, fmt.Sprintf("w%d", w))
		if err != nil {
			t.Fatal(err)
		}
		switch v {
		case a, a + 1: // the write in flight may have been applied, unacknowledged
			if !bytes.Equal(got, value(w, v)) {
				t.Errorf("writer %d: v%d holds %.40q", w, v, got)
			}
		default:
			t.Errorf("writer %d: acknowledged v%d, recovered v%d", w, a, v)
		}
		mg, mv, err := m.Read(fmt.Sprintf("w%d", w), nil)
		if err != nil || mv != v || !bytes.Equal(mg, got) {
			t.Errorf("mapping disagrees: v%d %v", mv, err)
		}
		// The recovered variable takes new writes.
		if nv, err := s.Write(ctx, fmt.Sprintf("w%d", w), value(w, v+1)); err != nil || nv != v+1 {
			t.Errorf("write after recovery: v%d %v", nv, err)
		}
	}
	t.Logf("acknowledged before the kill: %+v", acked)
}

// TestRestartKeepsEverything restarts an in-process broker on the same data
// directory.
func TestRestartKeepsEverything(t *testing.T) {
	dir, err := os.MkdirTemp("", "commy-r")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := broker.Config{DataDir: filepath.Join(dir, "data")}
	sock := filepath.Join(dir, "s.sock")
	h := startIn(t, cfg, sock)
	ctx := context.Background()
	c := h.dial(t)
	for _, tn := range []string{"a", "b", "empty"} {
		c.CreateTenant(ctx, tn)
	}
	for _, tn := range []string{"a", "b"} {
		for i := 0; i < 3; i++ {
			s, _ := c.CreateService(ctx, tn, fmt.Sprintf("s%d", i))
			for j := 0; j < 5; j++ {
				s.Allocate(ctx, fmt.Sprintf("v%d", j), []byte(fmt.Sprintf("%s/%d/%d", tn, i, j)), 0)
				s.Write(ctx, fmt.Sprintf("v%d", j), []byte(fmt.Sprintf("%s/%d/%d!", tn, i, j)))
			}
		}
	}
	c.DeleteService(ctx, "b", "s2")
	c.Close()
	h.stop(t)
	// A stray file and a corrupt service are skipped, not fatal.
	os.WriteFile(filepath.Join(cfg.DataDir, "a", "junk.mem"), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(cfg.DataDir, "a", "notes.txt"), []byte("hi"), 0o600)

	h2 := startIn(t, cfg, sock)
	c2 := h2.dial(t)
	ts, _ := c2.Tenants(ctx)
	if fmt.Sprint(ts) != "[a b empty]" {
		t.Fatalf("tenants %v", ts)
	}
	for _, tn := range []string{"a", "b"} {
		ss, _ := c2.Services(ctx, tn)
		want := 3
		if tn == "b" {
			want = 2
		}
		if len(ss) != want {
			t.Fatalf("%s: %d services", tn, len(ss))
		}
		for i := 0; i < want; i++ {
			s, err := c2.Service(ctx, tn, fmt.Sprintf("s%d", i))
			if err != nil {
				t.Fatal(err)
			}
			for j := 0; j < 5; j++ {
				got, v, err := s.Read(ctx, fmt.Sprintf("v%d", j))
				if err != nil || string(got) != fmt.Sprintf("%s/%d/%d!", tn, i, j) || v != 2 {
					t.Fatalf("%s/s%d/v%d = %q v%d %v", tn, i, j, got, v, err)
				}
			}
		}
	}
}
