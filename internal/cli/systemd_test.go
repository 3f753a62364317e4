package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/client"
	"go.uber.org/goleak"
)

// commyChild runs the command line given after the test flags, so that
// this test binary stands in for the commy binary.
func commyChild() int {
	args := os.Args[1:]
	for len(args) > 0 && strings.HasPrefix(args[0], "-test.") {
		args = args[1:]
	}
	return Main(append([]string{"commy"}, args...))
}

// childSwitch makes testutil.Main run commyChild instead of the tests.
const childSwitch = "COMMY_TEST_CHILD=commy"

// systemdEnv are the variables systemd sets for a service; the tests set
// them explicitly, so none may leak in from a test run under systemd.
var systemdEnv = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC",
	"WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID", "COMMY_SOCKET", "COMMY_DATA_DIR"}

func cleanEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(systemdEnv, name)
	})
	return append(append(env, childSwitch), extra...)
}

// commyCommand is `commy args...`.
func commyCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	return cmd
}

// socketActivateCommand is `systemd-socket-activate -l sock... commy args...`:
// it listens on each socket, and at the first connection execs commy with
// them as fds 3 and up.
func socketActivateCommand(t *testing.T, socks []string, args ...string) *exec.Cmd {
	t.Helper()
	sa, err := exec.LookPath("systemd-socket-activate")
	if errors.Is(err, exec.ErrNotFound) {
		for _, p := range []string{"/lib/systemd/systemd-socket-activate", "/usr/lib/systemd/systemd-socket-activate"} {
			if _, serr := os.Stat(p); serr == nil {
				sa, err = p, nil
				break
			}
		}
	}
	if errors.Is(err, exec.ErrNotFound) {
		t.Skip("systemd-socket-activate not installed (Debian: apt-get install systemd)")
	}
	if err != nil {
		t.Fatal(err)
	}
	c := commyCommand(t, args...)
	var argv []string
	for _, s := range socks {
		argv = append(argv, "--listen="+s)
	}
	// It hands the child only PATH, TERM, HOME, USER and what -E adds.
	argv = append(argv, "--setenv="+childSwitch, c.Path)
	cmd := exec.Command(sa, append(argv, args...)...)
	cmd.Env = cleanEnv()
	return cmd
}

// shortDir is a temporary directory with a path short enough for sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// proc is a started child process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr bytes.Buffer // read only after done
	done   chan struct{}
	err    error
}

func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, done: make(chan struct{})}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait returns the exit code and stderr, killing the process after 15s.
func (p *proc) wait() (int, string) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("%s did not exit; stderr:\n%s", p.cmd.Args[0], p.stderr.String())
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		p.t.Fatalf("wait: %v", p.err)
	}
	return p.cmd.ProcessState.ExitCode(), p.stderr.String()
}

// stop sends SIGTERM and wants a clean exit.
func (p *proc) stop() string {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	code, stderr := p.wait()
	if code != 0 {
		p.t.Fatalf("exit code %d after SIGTERM; stderr:\n%s", code, stderr)
	}
	return stderr
}

func waitForFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear", path)
}

// dialBroker connects to sock. It retries while the socket file is missing
// or not yet listening: systemd-socket-activate binds before it listens.
func dialBroker(t *testing.T, sock string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := client.Dial(ctx, sock, client.WithName("systemd-test"))
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) || ctx.Err() != nil {
			t.Fatalf("dial %s: %v", sock, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isSocket(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("socket file: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is %v, not a socket", path, fi.Mode())
	}
}

func TestParseListenEnv(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name    string
		env     map[string]string
		n       int
		names   []string
		wantErr string // part of the message
	}{
		{name: "absent"},
		{name: "one", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, n: 1, names: []string{""}},
		{name: "named", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "commy.socket:extra"},
			n: 2, names: []string{"commy.socket", "extra"}},
		{name: "other pid", env: map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": "1"}, wantErr: "LISTEN_PID=1 is not this process (pid 4242)"},
		{name: "pid not a number", env: map[string]string{"LISTEN_PID": "me", "LISTEN_FDS": "1"}, wantErr: `LISTEN_PID="me" is not a process id`},
		{name: "no pid", env: map[string]string{"LISTEN_FDS": "1"}, wantErr: "LISTEN_PID is not"},
		{name: "no fds", env: map[string]string{"LISTEN_PID": "4242"}, wantErr: "LISTEN_FDS is not"},
		{name: "fds not a number", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "one"}, wantErr: `LISTEN_FDS="one" is not a number`},
		{name: "zero fds", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "0"}, wantErr: "no sockets were passed"},
		{name: "negative fds", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"}, wantErr: "no sockets were passed"},
		{name: "names mismatch", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
			wantErr: "LISTEN_FDNAMES has 2 names for LISTEN_FDS=1"},
		{name: "names only", env: map[string]string{"LISTEN_FDNAMES": "a"}, wantErr: "LISTEN_PID is not"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseListenEnv(func(k string) string { return tt.env[k] }, pid)
			if tt.wantErr != "" {
				if !errors.Is(err, errActivation) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want errActivation saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.n != tt.n || !slices.Equal(got.names, tt.names) {
				t.Fatalf("got %+v, want n=%d names=%q", got, tt.n, tt.names)
			}
		})
	}
}

// TestSocketActivation runs commy under systemd-socket-activate with two
// sockets: the first connection starts it, it serves both, and it leaves
// the socket files to their owner when it stops.
func TestSocketActivation(t *testing.T) {
	dir := shortDir(t)
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	p := startProc(t, socketActivateCommand(t, []string{a, b},
		"--socket", filepath.Join(dir, "other.sock"), "serve", "--data-dir", filepath.Join(dir, "data"), "--log-format", "json"))
	waitForFile(t, a)
	waitForFile(t, b)
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("the broker started before the first connection")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c1 := dialBroker(t, a)
	if err := c1.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	c2 := dialBroker(t, b)
	tenants, err := c2.Tenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tenants, []string{"acme"}) {
		t.Fatalf("tenants through the second socket: %q", tenants)
	}
	st, err := c2.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Connections != 2 {
		t.Fatalf("broker sees %d connections, want 2", st.Connections)
	}
	c1.Close()
	c2.Close()

	stderr := p.stop()
	isSocket(t, a)
	isSocket(t, b)
	if _, err := os.Lstat(filepath.Join(dir, "other.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--socket path was created beside the passed sockets: %v", err)
	}
	if !strings.Contains(stderr, "--socket is ignored") {
		t.Errorf("no warning about the ignored --socket; stderr:\n%s", stderr)
	}
}

// TestSocketActivationKeepsData restarts a socket-activated broker on the
// same data directory and finds what the first one stored.
func TestSocketActivationKeepsData(t *testing.T) {
	dir := shortDir(t)
	sock, data := filepath.Join(dir, "commy.sock"), filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	p := startProc(t, socketActivateCommand(t, []string{sock}, "serve", "--data-dir", data))
	waitForFile(t, sock)
	c := dialBroker(t, sock)
	if err := c.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	svc, err := c.CreateService(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Allocate(ctx, "count", []byte("42"), 16); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.stop()
	// The file stays; remove it so that waitForFile sees the new one.
	isSocket(t, sock)
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}

	p = startProc(t, socketActivateCommand(t, []string{sock}, "serve", "--data-dir", data))
	waitForFile(t, sock)
	c = dialBroker(t, sock)
	svc, err = c.Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	got, _, err := svc.Read(ctx, "count")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if string(got) != "42" {
		t.Fatalf("after restart count = %q, want 42", got)
	}
	c.Close()
	p.stop()
}

// notifySocket plays the service manager's end of NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T, dir string) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(dir, "notify"), msgs: make(chan string, 1024)}
	var err error
	if n.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(n.msgs)
		buf := make([]byte, 4096)
		for {
			k, err := n.conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() {
		n.conn.Close()
		for range n.msgs {
		}
		<-done
	})
	return n
}

// next returns the next message within 10s.
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	select {
	case m, ok := <-n.msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no sd_notify message within 10s")
	}
	return ""
}

// nextState skips WATCHDOG=1 pings and periodic STATUS= lines.
func (n *notifySocket) nextState(t *testing.T) string {
	t.Helper()
	for {
		m := n.next(t)
		if m != "WATCHDOG=1" && !strings.HasPrefix(m, "STATUS=") {
			return m
		}
	}
}

// expectState fails unless the next state message starts with prefix.
func (n *notifySocket) expectState(t *testing.T, prefix string) string {
	t.Helper()
	m := n.nextState(t)
	if !strings.HasPrefix(m, prefix) {
		t.Fatalf("sd_notify %q, want %s", m, prefix)
	}
	return m
}

// countPings counts WATCHDOG=1 messages over d.
func (n *notifySocket) countPings(t *testing.T, d time.Duration) int {
	t.Helper()
	pings := 0
	for end := time.After(d); ; {
		select {
		case m := <-n.msgs:
			if m == "WATCHDOG=1" {
				pings++
			}
		case <-end:
			return pings
		}
	}
}

func writePolicy(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const goodPolicy = "[[grant]]\nusers = [65534]\ntenants = [\"*\"]\nrights = [\"read\"]\n"

// TestNotify checks the sd_notify protocol of a commy serve started as a
// Type=notify service with a watchdog.
func TestNotify(t *testing.T) {
	dir := shortDir(t)
	n := listenNotify(t, dir)
	sock, policy := filepath.Join(dir, "commy.sock"), filepath.Join(dir, "policy.toml")
	writePolicy(t, policy, goodPolicy)
	cmd := commyCommand(t, "--socket", sock, "serve", "--data-dir", filepath.Join(dir, "data"), "--policy", policy)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=200000")
	p := startProc(t, cmd)

	// READY=1 is the first message, and by then the socket accepts.
	ready := n.next(t)
	if !strings.HasPrefix(ready, "READY=1\n") || !strings.Contains(ready, "STATUS=serving 0 connections, 0 tenants, 0 services") {
		t.Fatalf("first sd_notify message %q, want READY=1 with STATUS=", ready)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("connect right after READY=1: %v", err)
	}
	conn.Close()
	c := dialBroker(t, sock)

	if pings := n.countPings(t, time.Second); pings < 3 {
		t.Errorf("%d WATCHDOG=1 in 1s with WATCHDOG_USEC=200000, want about 10", pings)
	}

	// A reload: RELOADING=1 with MONOTONIC_USEC=, then READY=1.
	p.signal(syscall.SIGHUP)
	reloading := n.expectState(t, "RELOADING=1\n")
	_, usec, _ := strings.Cut(reloading, "MONOTONIC_USEC=")
	usec, _, _ = strings.Cut(usec, "\n")
	if v, err := strconv.ParseUint(usec, 10, 64); err != nil || v == 0 {
		t.Errorf("RELOADING=1 without a valid MONOTONIC_USEC: %q", reloading)
	}
	if m := n.expectState(t, "READY=1\n"); !strings.Contains(m, "STATUS=policy reloaded; serving 1 connections") {
		t.Errorf("after reload: %q", m)
	}

	// A broken policy keeps the old one, and the status says so.
	writePolicy(t, policy, "this is not toml")
	p.signal(syscall.SIGHUP)
	n.expectState(t, "RELOADING=1\n")
	if m := n.expectState(t, "READY=1\n"); !strings.Contains(m, "policy reload failed, previous policy kept") {
		t.Errorf("after a failed reload: %q", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Stats(ctx); err != nil {
		t.Fatalf("broker after a failed reload: %v", err)
	}
	c.Close()

	p.signal(syscall.SIGTERM)
	n.expectState(t, "STOPPING=1")
	code, stderr := p.wait()
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "policy reload failed") {
		t.Errorf("the log does not say why the reload failed; stderr:\n%s", stderr)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the broker's own socket file was not removed: %v", err)
	}
}

// TestNotifyInProcess runs serve in this process to show that every
// goroutine it starts, the watchdog's included, ends with it.
func TestNotifyInProcess(t *testing.T) {
	dir := shortDir(t)
	n := listenNotify(t, dir)
	for _, k := range systemdEnv {
		t.Setenv(k, "")
	}
	t.Setenv("NOTIFY_SOCKET", n.path)
	t.Setenv("WATCHDOG_USEC", "100000")
	sock := filepath.Join(dir, "commy.sock")
	before := goleak.IgnoreCurrent()

	code := make(chan int, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		code <- run([]string{"commy", "--socket", sock, "serve", "--data-dir", filepath.Join(dir, "data")}, &stdout, &stderr)
	}()
	n.expectState(t, "READY=1\n")
	for n.next(t) != "WATCHDOG=1" {
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	n.expectState(t, "STOPPING=1")
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d; stderr:\n%s", c, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return after SIGTERM")
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("serve left goroutines behind: %v", err)
	}
}

// TestBadActivation passes malformed socket-activation environments and
// wants a clear error, exit code 1, and no socket of the broker's own.
func TestBadActivation(t *testing.T) {
	dir := shortDir(t)

	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	dgram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "dgram"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer dgram.Close()
	dgramFile, err := dgram.File()
	if err != nil {
		t.Fatal(err)
	}
	defer dgramFile.Close()
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	connected, peer := os.NewFile(uintptr(pair[0]), "connected"), os.NewFile(uintptr(pair[1]), "peer")
	defer connected.Close()
	defer peer.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tcpFile, err := tcp.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer tcpFile.Close()

	tests := []struct {
		name    string
		env     []string
		fd3     *os.File // passed as fd 3 with LISTEN_PID set to the child's pid
		wantErr string
	}{
		{name: "other pid", env: []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, wantErr: "LISTEN_PID=1 is not this process"},
		{name: "fds not a number", env: []string{"LISTEN_FDS=three"}, fd3: pipeR, wantErr: `LISTEN_FDS="three" is not a number`},
		{name: "zero fds", env: []string{"LISTEN_FDS=0"}, fd3: pipeR, wantErr: "LISTEN_FDS=0: no sockets were passed"},
		{name: "pipe", env: []string{"LISTEN_FDS=1"}, fd3: pipeR, wantErr: "fd 3 is not a socket"},
		{name: "datagram", env: []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=commy.socket"}, fd3: dgramFile,
			wantErr: `fd 3 ("commy.socket") is a SOCK_DGRAM socket, want SOCK_STREAM`},
		{name: "not listening", env: []string{"LISTEN_FDS=1"}, fd3: connected, wantErr: "fd 3 is a connected or unbound socket"},
		{name: "tcp", env: []string{"LISTEN_FDS=1"}, fd3: tcpFile, wantErr: "fd 3 is not a Unix socket (AF_INET)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(dir, "own.sock")
			args := []string{"--socket", sock, "serve", "--data-dir", filepath.Join(dir, "data")}
			cmd := commyCommand(t, args...)
			if tt.fd3 != nil {
				// The child's pid is known only once it runs: a shell sets
				// LISTEN_PID to its own and execs commy in its place.
				cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, cmd.Path}, args...)...)
				cmd.Env = cleanEnv()
				cmd.ExtraFiles = []*os.File{tt.fd3}
			}
			cmd.Env = append(cmd.Env, tt.env...)
			code, stderr := startProc(t, cmd).wait()
			if code != 1 || !strings.Contains(stderr, "commy: socket activation: "+tt.wantErr) {
				t.Fatalf("exit code %d, stderr %q; want 1 and %q", code, stderr, tt.wantErr)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the broker made its own socket: %v", err)
			}
		})
	}
}

// TestManPage checks that `commy man` renders a section 1 page that lists
// the commands and does not name the builder's socket path.
func TestManPage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"commy", "man"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	page := stdout.String()
	for _, want := range []string{".TH commy 1", "serve", "LISTEN_FDS", "NOTIFY_SOCKET", "$XDG_RUNTIME_DIR/commy/commy.sock",
		".SH SYNOPSIS", `\fBcommy get\fP [\fIFLAGS\fP] \fITENANT/SERVICE\fP \fIVARIABLE\fP`, ".SH EXIT STATUS", "\n\\fB66\\fP\n", ".SH EXAMPLES"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(page, "\nman\n") || strings.Contains(page, "print the commy(1) man page") {
		t.Error("the hidden man command is in the man page")
	}
	// The options every command takes are described once, not per command.
	if n := strings.Count(page, "COMMY_SOCKET"); n > 3 {
		t.Errorf("COMMY_SOCKET appears %d times: --socket is repeated per command", n)
	}
}
