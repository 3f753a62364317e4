package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
)

// anonFDs counts the descriptors of process pid on the anonymous inode
// kind, such as "io_uring" or "eventpoll".
func anonFDs(t *testing.T, pid int, kind string) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target == "anon_inode:["+kind+"]" {
			n++
		}
	}
	return n
}

// serveWith starts `serve` with flags on a socket and data directory of its
// own, and returns it once its socket is there.
func serveWith(t *testing.T, flags ...string) (*proc, string) {
	t.Helper()
	dir := shortDir(t)
	sock := filepath.Join(dir, "commy.sock")
	args := append([]string{"--socket", sock, "serve", "--data-dir", filepath.Join(dir, "data")}, flags...)
	p := commyProc(t, nil, args...)
	waitForFile(t, sock)
	return p, sock
}

// TestNoIOURingFlag: `serve` writes fan-outs through io_uring where the
// kernel has it, and `serve --no-io-uring` never makes an instance, even
// for a fan-out.
func TestNoIOURingFlag(t *testing.T) {
	uring := ipc.IOURing() == nil
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-io-uring=%v", off), func(t *testing.T) {
			var flags []string
			if off {
				flags = append(flags, "--no-io-uring")
			}
			p, sock := serveWith(t, flags...)
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
			got := anonFDs(t, p.cmd.Process.Pid, "io_uring")
			if want := uring && !off; (got > 0) != want {
				t.Fatalf("the broker holds %d io_uring instances; io_uring wanted: %v", got, want)
			}
		})
	}
}

// TestNoEventLoopFlag: `serve` makes the event loop's epoll instance, and
// `serve --no-event-loop` does not.
func TestNoEventLoopFlag(t *testing.T) {
	count := map[bool]int{}
	for _, off := range []bool{false, true} {
		var flags []string
		if off {
			flags = append(flags, "--no-event-loop")
		}
		p, sock := serveWith(t, flags...)
		c, err := client.Dial(t.Context(), sock) // served: the broker is up
		if err != nil {
			t.Fatal(err)
		}
		count[off] = anonFDs(t, p.cmd.Process.Pid, "eventpoll")
		c.Close()
	}
	if count[false] != count[true]+1 {
		t.Fatalf("epoll instances: %d with the event loop, %d without; want one more with it", count[false], count[true])
	}
}

// TestProcsFlag: `serve` runs on half the CPUs the runtime finds, at least
// one, unless GOMAXPROCS or --procs says otherwise; it logs what it runs on.
func TestProcsFlag(t *testing.T) {
	half := max(1, runtime.GOMAXPROCS(0)/2)
	for _, tc := range []struct {
		env   string
		flags []string
		want  int
	}{
		{"", nil, half},
		{"", []string{"--procs", "3"}, 3},
		{"5", nil, 5},
		{"5", []string{"--procs", "1"}, 1},
	} {
		t.Setenv("GOMAXPROCS", tc.env)
		if tc.env == "" {
			os.Unsetenv("GOMAXPROCS")
		}
		p, _ := serveWith(t, tc.flags...)
		if log := p.stop(); !strings.Contains(log, fmt.Sprintf(" procs=%d ", tc.want)) {
			t.Errorf("GOMAXPROCS=%q %v: want procs=%d in the log:\n%s", tc.env, tc.flags, tc.want, log)
		}
	}
	code, _, errOut := commy(t, "serve", "--procs", "-1")
	if code != ExitUsage || !strings.Contains(errOut, "--procs") {
		t.Errorf("--procs -1: exit %d, %s", code, errOut)
	}
}
