package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
)

// ioURings counts the io_uring instances process pid holds.
func ioURings(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target == "anon_inode:[io_uring]" {
			n++
		}
	}
	return n
}

// TestNoIOURingFlag: `serve` writes fan-outs through io_uring where the
// kernel has it, and `serve --no-io-uring` never makes an instance, even
// for a fan-out.
func TestNoIOURingFlag(t *testing.T) {
	uring := ipc.IOURing() == nil
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-io-uring=%v", off), func(t *testing.T) {
			dir := shortDir(t)
			sock := filepath.Join(dir, "commy.sock")
			args := []string{"--socket", sock, "serve", "--data-dir", filepath.Join(dir, "data")}
			if off {
				args = append(args, "--no-io-uring")
			}
			p := commyProc(t, nil, args...)
			waitForFile(t, sock)
			ctx := t.Context()
			c, err := client.Dial(ctx, sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.CreateTenant(ctx, "t")
			svc, err := c.CreateService(ctx, "t", "s")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Allocate(ctx, "v", []byte("0"), 0); err != nil {
				t.Fatal(err)
			}
			var subs []*client.Subscription
			for range 8 {
				sc, err := client.Dial(ctx, sock)
				if err != nil {
					t.Fatal(err)
				}
				defer sc.Close()
				s, err := sc.Service(ctx, "t", "s")
				if err != nil {
					t.Fatal(err)
				}
				sub, err := s.Subscribe(ctx)
				if err != nil {
					t.Fatal(err)
				}
				subs = append(subs, sub)
			}
			if _, err := svc.Write(ctx, "v", []byte("1")); err != nil {
				t.Fatal(err)
			}
			for i, sub := range subs {
				if n, err := sub.Next(ctx); err != nil || len(n.Variables) != 1 {
					t.Fatalf("subscriber %d: %+v, %v", i, n, err)
				}
			}
			got := ioURings(t, p.cmd.Process.Pid)
			if want := uring && !off; (got > 0) != want {
				t.Fatalf("the broker holds %d io_uring instances; io_uring wanted: %v", got, want)
			}
		})
	}
}

// epolls counts the epoll instances process pid holds.
func epolls(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target == "anon_inode:[eventpoll]" {
			n++
		}
	}
	return n
}

// TestNoEventLoopFlag: `serve` makes the event loop's epoll instance, and
// `serve --no-event-loop` does not.
func TestNoEventLoopFlag(t *testing.T) {
	count := map[bool]int{}
	for _, off := range []bool{false, true} {
		dir := shortDir(t)
		sock := filepath.Join(dir, "commy.sock")
		args := []string{"--socket", sock, "serve", "--data-dir", filepath.Join(dir, "data")}
		if off {
			args = append(args, "--no-event-loop")
		}
		p := commyProc(t, nil, args...)
		waitForFile(t, sock)
		c, err := client.Dial(t.Context(), sock) // served: the broker is up
		if err != nil {
			t.Fatal(err)
		}
		count[off] = epolls(t, p.cmd.Process.Pid)
		c.Close()
	}
	if count[false] != count[true]+1 {
		t.Fatalf("epoll instances: %d with the event loop, %d without; want one more with it", count[false], count[true])
	}
}
