package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/client"
	"golang.org/x/sys/unix"
)

// storeManager plays systemd's end of NOTIFY_SOCKET, file descriptor store
// included: FDSTORE=1 keeps the descriptors under FDNAME, FDSTOREREMOVE=1
// closes them. Other messages go to msgs.
type storeManager struct {
	path string
	conn *net.UnixConn
	msgs chan string

	mu    sync.Mutex
	fds   map[string]*os.File
	store chan struct{} // a token per FDSTORE or FDSTOREREMOVE handled
}

func listenStore(t *testing.T, dir string) *storeManager {
	t.Helper()
	m := &storeManager{path: filepath.Join(dir, "notify"), msgs: make(chan string, 1024),
		fds: map[string]*os.File{}, store: make(chan struct{}, 1024)}
	var err error
	if m.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: m.path, Net: "unixgram"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*16))
		for {
			n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			var fds []int
			if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, c := range cmsgs {
					if got, err := unix.ParseUnixRights(&c); err == nil {
						fds = append(fds, got...)
					}
				}
			}
			m.handle(string(buf[:n]), fds)
		}
	}()
	t.Cleanup(func() {
		m.conn.Close()
		<-done
		for _, f := range m.fds {
			f.Close()
		}
	})
	return m
}

func (m *storeManager) handle(msg string, fds []int) {
	vars := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		k, v, _ := strings.Cut(line, "=")
		vars[k] = v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case vars["FDSTORE"] == "1" && len(fds) == 1 && vars["FDNAME"] != "":
		if old := m.fds[vars["FDNAME"]]; old != nil {
			old.Close()
		}
		m.fds[vars["FDNAME"]] = os.NewFile(uintptr(fds[0]), vars["FDNAME"])
		m.store <- struct{}{}
		return
	case vars["FDSTOREREMOVE"] == "1":
		if f := m.fds[vars["FDNAME"]]; f != nil {
			f.Close()
			delete(m.fds, vars["FDNAME"])
		}
		m.store <- struct{}{}
	default:
		m.msgs <- msg
	}
	for _, fd := range fds { // descriptors that came with anything else
		unix.Close(fd)
	}
}

func (m *storeManager) names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.fds))
}

// waitStore waits up to 10s for n store messages.
func (m *storeManager) waitStore(n int) bool {
	for range n {
		select {
		case <-m.store:
		case <-time.After(10 * time.Second):
			return false
		}
	}
	return true
}

func (m *storeManager) expectReady(t *testing.T) {
	t.Helper()
	select {
	case msg := <-m.msgs:
		if !strings.HasPrefix(msg, "READY=1") {
			t.Fatalf("sd_notify %q, want READY=1", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no READY=1 within 10s")
	}
}

// restartCommand is commy started the way systemd restarts it: the socket
// unit's listener and every stored descriptor are fds 3 and up, named in
// LISTEN_FDNAMES.
func (m *storeManager) restartCommand(t *testing.T, listener *os.File, args ...string) *exec.Cmd {
	t.Helper()
	cmd := commyCommand(t, args...)
	files, names := []*os.File{listener}, []string{"commy.socket"}
	m.mu.Lock()
	for _, name := range slices.Sorted(maps.Keys(m.fds)) {
		fd, err := unix.FcntlInt(m.fds[name].Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		dup := os.NewFile(uintptr(fd), name)
		t.Cleanup(func() { dup.Close() })
		files, names = append(files, dup), append(names, name)
	}
	m.mu.Unlock()
	cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, cmd.Path}, args...)...)
	cmd.Env = cleanEnv("NOTIFY_SOCKET="+m.path, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	cmd.ExtraFiles = files
	return cmd
}

// socketUnit is the listening socket a socket unit would pass, as a file.
func socketUnit(t *testing.T, sock string) *os.File {
	t.Helper()
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	defer ul.Close()
	f, err := ul.File() // a dup that keeps listening
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); os.Remove(sock) })
	return f
}

// TestFDStore runs a memfd broker under a service manager with a file
// descriptor store, kills it with SIGKILL, and finds every acknowledged
// write in the broker systemd would start next.
func TestFDStore(t *testing.T) {
	dir := shortDir(t)
	m := listenStore(t, dir)
	sock := filepath.Join(dir, "commy.sock")
	listener := socketUnit(t, sock)
	args := []string{"serve", "--backend", "memfd", "--data-dir", filepath.Join(dir, "data")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// systemd 254 and later tell the service FileDescriptorStoreMax=; one is
	// too few for a tenant and a service.
	cmd := m.restartCommand(t, listener, args...)
	cmd.Env = append(cmd.Env, "FDSTORE=1")
	p := startProc(t, cmd)
	m.expectReady(t)
	c := dialBroker(t, sock)
	if err := c.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	svc, err := c.CreateService(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Allocate(ctx, "count", []byte("1"), 16); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 50; i++ {
		if _, err := svc.Write(ctx, "count", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if !m.waitStore(2) {
		p.signal(syscall.SIGKILL)
		_, stderr := p.wait()
		t.Fatalf("stored %q; stderr:\n%s", m.names(), stderr)
	}
	first := m.names()
	if len(first) != 2 || !strings.HasPrefix(first[0], "commy-service/acme/orders/") || first[1] != "commy-tenant/acme" {
		t.Fatalf("stored %q", first)
	}
	c.Close()
	// A reader with a mapping, which must follow the service to its new
	// memfd after the restart.
	rc, err := client.Dial(ctx, sock, client.WithReconnect(client.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rsvc, err := rc.Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	mapped, err := rsvc.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mapped.Close()
	if got, _, err := mapped.Read("count", nil); err != nil || string(got) != "50" || !mapped.Local() {
		t.Fatalf("mapped count %q %v (local %v)", got, err, mapped.Local())
	}
	p.signal(syscall.SIGKILL)
	if _, stderr := p.wait(); !strings.Contains(stderr, "more tenants and services than FileDescriptorStoreMax=") {
		t.Errorf("no warning about FDSTORE=1; stderr:\n%s", stderr)
	}

	p = startProc(t, m.restartCommand(t, listener, args...))
	m.expectReady(t)
	if !m.waitStore(2) { // the copy stored, then the original removed
		t.Fatalf("stored %q after restart", m.names())
	}
	c = dialBroker(t, sock)
	svc, err = c.Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got, v, err := svc.Read(ctx, "count"); err != nil || string(got) != "50" || v != 50 {
		t.Fatalf("after restart count = %q v%d %v, want 50", got, v, err)
	}
	second := m.names()
	if len(second) != 2 || second[0] == first[0] || second[1] != first[1] {
		t.Fatalf("stored after restart %q, before %q", second, first)
	}
	if _, err := svc.Write(ctx, "count", []byte("51")); err != nil {
		t.Fatal(err)
	}
	if err := rc.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		got, _, err := mapped.Read("count", nil)
		if err == nil && string(got) == "51" && mapped.Local() {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the reconnected mapping reads %q %v (local %v), want 51", got, err, mapped.Local())
		}
		time.Sleep(10 * time.Millisecond)
	}
	rc.Close()
	if err := c.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if !m.waitStore(2) || len(m.names()) != 0 {
		t.Fatalf("stored after DeleteTenant %q", m.names())
	}
	if got := m.names(); len(got) != 0 {
		t.Fatalf("stored after DeleteTenant %q", got)
	}
	c.Close()
	if stderr := p.stop(); !strings.Contains(stderr, "restoring=2") {
		t.Errorf("the log does not say what was restored; stderr:\n%s", stderr)
	}
}

// TestFDStoreOff: with the file backend, descriptors passed back are left
// alone, and nothing is stored.
func TestFDStoreOff(t *testing.T) {
	dir := shortDir(t)
	m := listenStore(t, dir)
	sock := filepath.Join(dir, "commy.sock")
	listener := socketUnit(t, sock)
	marker, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	m.fds["commy-tenant/acme"] = marker

	p := startProc(t, m.restartCommand(t, listener, "serve", "--data-dir", filepath.Join(dir, "data")))
	m.expectReady(t)
	c := dialBroker(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ids, err := c.Tenants(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("tenants %q %v", ids, err)
	}
	if err := c.CreateTenant(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if stderr := p.stop(); !strings.Contains(stderr, "descriptors passed back are ignored") {
		t.Errorf("no warning about the ignored descriptors; stderr:\n%s", stderr)
	}
	if got := m.names(); !slices.Equal(got, []string{"commy-tenant/acme"}) {
		t.Fatalf("stored %q", got)
	}
}

// TestFDStoreStalled: a service manager that reads nothing makes Store and
// Remove fail after fdStoreTimeout instead of blocking the broker.
func TestFDStoreStalled(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("FDSTORE", "")
	var logs bytes.Buffer
	s, err := newFDStore(slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The socket's queue holds net.unix.max_dgram_qlen messages (512 by
	// default); the next one waits for room.
	for i := 0; ; i++ {
		err := s.Remove("commy-tenant/t" + strconv.Itoa(i))
		if err == nil {
			if i > 100000 {
				t.Fatal("the queue never filled")
			}
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("after %d messages: %v, want a timeout", i, err)
		}
		break
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.Store("commy-tenant/x", f); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Store into a full queue: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("commy-tenant/x"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Remove after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
