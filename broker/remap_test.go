package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/shm"
	"github.com/commy/commy/internal/testutil"
)

func init() { children["mapreader"] = mapReaderChild }

// mapReaderChild maps COMMY_SERVICE on COMMY_SOCK through the SDK, and keeps
// a raw shm mapping of the same file beside it. It prints "mapped", then for
// each line on stdin: "sdk" reads v through the SDK ("value V local|socket"
// or "error CODE"), "raw" through the raw mapping ("value V" or "error
// ERR").
func mapReaderChild() int {
	ctx := context.Background()
	c, svc, err := childService(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer c.Close()
	m, err := svc.Map(ctx)
	if err != nil || !m.Local() {
		fmt.Fprintln(os.Stderr, "map:", err, m != nil && m.Local())
		return 2
	}
	defer m.Close()
	_, f, err := svc.OpenFile(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rm, err := shm.Map(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer rm.Close()
	fmt.Println("mapped")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var v []byte
		switch sc.Text() {
		case "sdk":
			v, _, err = m.Read("v", nil)
			var ce *client.Error
			switch {
			case errors.As(err, &ce):
				fmt.Println("error", ce.Code)
			case err != nil:
				fmt.Println("error", err)
			case m.Local():
				fmt.Println("value", string(v), "local")
			default:
				fmt.Println("value", string(v), "socket")
			}
		case "raw":
			if v, _, err = rm.Read("v", nil); err != nil {
				fmt.Println("error", err)
			} else {
				fmt.Println("value", string(v))
			}
		}
	}
	return 0
}

// mapReader is a running mapReaderChild.
type mapReader struct {
	t     *testing.T
	in    io.WriteCloser
	lines chan string
	err   *strings.Builder
}

func startMapReader(t *testing.T, h *harness, uid int, service string) *mapReader {
	t.Helper()
	cmd := testutil.Child(t, "mapreader", uid, uid, "COMMY_SOCK="+h.sock, "COMMY_SERVICE="+service)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &mapReader{t: t, in: in, lines: make(chan string, 16), err: &strings.Builder{}}
	cmd.Stderr = r.err
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
	}()
	if l := r.next(); l != "mapped" {
		t.Fatalf("uid %d: %q", uid, l)
	}
	return r
}

func (r *mapReader) next() string {
	r.t.Helper()
	select {
	case l, ok := <-r.lines:
		if !ok {
			r.t.Fatalf("reader exited; stderr: %s", r.err.String())
		}
		return l
	case <-time.After(10 * time.Second):
		r.t.Fatal("reader said nothing for 10s")
	}
	return ""
}

// ask sends a command and returns the answer.
func (r *mapReader) ask(cmd string) string {
	r.t.Helper()
	if _, err := fmt.Fprintln(r.in, cmd); err != nil {
		r.t.Fatal(err)
	}
	return r.next()
}

// TestRemapAfterRevoke: after a reload withdraws a uid's read and map
// rights, ReplaceServiceFile moves the service to a new file: the revoked
// reader's mapping stops (its SDK asks again and is refused; its raw mapping
// says the file was replaced) while an allowed reader moves to the new file
// and sees later writes. Writes racing the replacement are all kept.
func TestRemapAfterRevoke(t *testing.T) {
	testutil.RequireRoot(t)
	for _, backend := range []string{broker.BackendFile, broker.BackendMemfd} {
		t.Run(backend, func(t *testing.T) {
			const revoked, allowed = testutil.Nobody, 65533
			dir := t.TempDir()
			policyFile := filepath.Join(dir, "policy.toml")
			grant := func(uids string) string {
				return "[[grant]]\nusers = [" + uids + "]\ntenants = [\"acme\"]\nrights = [\"read\", \"map\"]\n"
			}
			if err := os.WriteFile(policyFile, []byte(grant("65534, 65533")), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := broker.LoadPolicy(policyFile)
			if err != nil {
				t.Fatal(err)
			}
			h := start(t, broker.Config{Policy: p, Backend: backend})
			seedService(t, h, "acme", "orders")
			ctx := t.Context()
			c := h.dial(t)
			svc, err := c.Service(ctx, "acme", "orders")
			if err != nil {
				t.Fatal(err)
			}
			bad := startMapReader(t, h, revoked, "acme/orders")
			good := startMapReader(t, h, allowed, "acme/orders")
			if _, err := svc.Write(ctx, "v", []byte("one")); err != nil {
				t.Fatal(err)
			}
			for _, r := range []*mapReader{bad, good} {
				if got := r.ask("sdk"); got != "value one local" {
					t.Fatalf("before: %q", got)
				}
			}

			if err := os.WriteFile(policyFile, []byte(grant("65533")), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := h.b.ReloadPolicy(policyFile); err != nil {
				t.Fatal(err)
			}
			// A writer races the replacement: every write it got
			// acknowledged must be in the new file.
			var wg sync.WaitGroup
			var last uint64
			var werr error
			stop := make(chan struct{})
			wsvc, err := h.dial(t).Service(ctx, "acme", "orders") // its own connection: the broker serves one request of a connection at a time
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					v, err := wsvc.Write(ctx, "v", fmt.Appendf(nil, "w%d", i))
					if err == nil && last != 0 && v != last+1 {
						err = fmt.Errorf("write %d acknowledged with version %d after %d: acknowledged writes were lost", i, v, last)
					}
					if last, werr = v, err; err != nil {
						return
					}
				}
			}()
			time.Sleep(10 * time.Millisecond) // some writes before
			if _, err := c.ReplaceServiceFile(ctx, "acme", "other"); err == nil {
				t.Error("replacing a service that does not exist succeeded")
			}
			rs, err := c.ReplaceServiceFile(ctx, "acme", "orders")
			time.Sleep(10 * time.Millisecond) // and some after
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if werr != nil {
				t.Fatal(werr)
			}
			if _, err := svc.Write(ctx, "v", []byte("two")); err != nil {
				t.Fatal(err)
			}
			m, err := svc.Map(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if v, ver, err := m.Read("v", nil); err != nil || string(v) != "two" || ver != last+1 {
				t.Fatalf("new file: %q version %d, %v; want \"two\" version %d: an acknowledged write was lost", v, ver, err, last+1)
			}
			if m.File().Path != rs.FilePath {
				t.Errorf("mapped %q, ReplaceServiceFile said %q", m.File().Path, rs.FilePath)
			}

			if got := good.ask("sdk"); got != "value two local" {
				t.Errorf("allowed reader after the replacement: %q, want the new value from a mapping", got)
			}
			if got := good.ask("raw"); got != "error "+shm.ErrServiceReplaced.Error() {
				t.Errorf("allowed reader's old raw mapping: %q", got)
			}
			if got := bad.ask("sdk"); got != "error PERMISSION_DENIED" {
				t.Errorf("revoked reader after the replacement: %q, want PERMISSION_DENIED", got)
			}
			if got := bad.ask("raw"); got != "error "+shm.ErrServiceReplaced.Error() {
				t.Errorf("revoked reader's old raw mapping: %q, want it stopped", got)
			}
		})
	}
}

// TestRemapNeedsAdmin: ReplaceServiceFile needs the admin right on the
// service, and a caller without it cannot tell a missing service from one
// it may not replace.
func TestRemapNeedsAdmin(t *testing.T) {
	testutil.RequireRoot(t)
	p, err := broker.ParsePolicy([]byte("[[grant]]\nusers = [65534]\ntenants = [\"acme\"]\nrights = [\"read\", \"map\", \"write\", \"create\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, broker.Config{Policy: p})
	seedService(t, h, "acme", "orders")
	res := runScript(t, h, testutil.Nobody, testutil.Nobody,
		map[string]any{"type": "ReplaceServiceFile", "tenant_id": "acme", "service_name": "orders"},
		map[string]any{"type": "ReplaceServiceFile", "tenant_id": "acme", "service_name": "absent"})
	for i, r := range res {
		if r.Reply != "PERMISSION_DENIED" {
			t.Errorf("step %d: %+v, want PERMISSION_DENIED", i, r)
		}
	}
	c := h.dial(t)
	if _, err := c.ReplaceServiceFile(t.Context(), "acme", "absent"); !errors.Is(err, client.ErrServiceNotFound) {
		t.Errorf("root, missing service: %v, want SERVICE_NOT_FOUND", err)
	}
}
