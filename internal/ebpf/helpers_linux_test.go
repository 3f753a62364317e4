//go:build linux

package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Re-executed test binaries run a helper mode instead of the tests.
const (
	helperEnv    = "COMMY_EBPF_TEST_HELPER" // the mode
	helperArgEnv = "COMMY_EBPF_TEST_ARG"    // its argument
	mapSize      = 4096                     // bytes mapped by helpers; service files are this long
)

// runHelper runs one helper mode: it prints one line of results, then waits
// for its stdin to close, so the parent can read /proc/<pid>/exe meanwhile.
func runHelper(mode string) int {
	arg := os.Getenv(helperArgEnv)
	var out string
	switch mode {
	case "open", "openat2":
		fd, err := helperOpen(mode, arg)
		if err != nil {
			out = fmt.Sprintf("open %d", -int64(errnoOf(err)))
			break
		}
		out = fmt.Sprintf("open %d mmap %d", fd, mmapRaw(fd, unix.PROT_READ))
	case "recv":
		// The descriptor arrives over SCM_RIGHTS on the socket at fd 3.
		fd, err := recvFD(3)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		out = fmt.Sprintf("mmapw %d mmap %d", mmapRaw(fd, unix.PROT_READ|unix.PROT_WRITE), mmapRaw(fd, unix.PROT_READ))
	case "load":
		p, err := Load(Options{})
		if err == nil {
			p.Close()
		}
		out = fmt.Sprintf("notsupported=%t eperm=%t err=%v", errors.Is(err, ErrNotSupported), errors.Is(err, unix.EPERM), err)
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		return 2
	}
	fmt.Println(out)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func helperOpen(mode, path string) (int, error) {
	if mode == "openat2" {
		return unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC})
	}
	return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return unix.EIO
}

// mmapRaw calls mmap(2) for a shared mapping of fd and returns the address
// or -errno, exactly as the kernel returns it to the probe.
func mmapRaw(fd, prot int) int64 {
	addr, _, errno := unix.Syscall6(unix.SYS_MMAP, 0, mapSize, uintptr(prot), unix.MAP_SHARED, uintptr(fd), 0)
	if errno != 0 {
		return -int64(errno)
	}
	return int64(addr)
}

// recvFD receives one descriptor over SCM_RIGHTS.
func recvFD(sock int) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, flags, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("recvmsg", err)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return -1, errors.New("recvmsg: control message truncated")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("recvmsg: %d control messages: %v", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("recvmsg: %d descriptors: %v", len(fds), err)
	}
	return fds[0], nil
}

// sendFD sends fd over SCM_RIGHTS (sendmsg(2)).
func sendFD(t *testing.T, sock, fd int) {
	t.Helper()
	if err := unix.Sendmsg(sock, []byte{0}, unix.UnixRights(fd), nil, 0); err != nil {
		t.Fatal(os.NewSyscallError("sendmsg", err))
	}
}

// helper is a running re-executed test binary.
type helper struct {
	cmd   *exec.Cmd
	out   *os.File // read end of its stdout
	stdin *os.File // write end of its stdin; closing it lets the helper exit
	line  string
}

// startHelper runs exe in the given helper mode; cred, if set, changes its
// uid and gid, and extra become its descriptors 3 and up.
func startHelper(t *testing.T, exe, mode, arg string, cred *syscall.Credential, extra ...*os.File) *helper {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Dir = "/"
	// Under -race a process sleeps a second at exit unless told otherwise.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), "GORACE="+gorace, helperEnv+"="+mode, helperArgEnv+"="+arg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		outR.Close()
		inW.Close()
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, out: outR, stdin: inW}
	t.Cleanup(h.finish)
	return h
}

// result returns the helper's line of results.
func (h *helper) result(t *testing.T) string {
	t.Helper()
	if h.line != "" {
		return h.line
	}
	if err := h.out.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(h.out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper %v: %v", h.cmd.Env[len(h.cmd.Env)-3:], err)
	}
	h.line = strings.TrimSpace(line)
	return h.line
}

// finish lets the helper exit and waits for it; it is idempotent.
func (h *helper) finish() {
	if h.stdin == nil {
		return
	}
	h.stdin.Close()
	h.stdin = nil
	h.cmd.Wait()
	h.out.Close()
}

// pid returns the helper's process id.
func (h *helper) pid() uint32 { return uint32(h.cmd.Process.Pid) }

var public struct {
	once sync.Once
	dir  string
	exe  string
	err  error
}

// publicTestBinary returns a copy of the test binary that any user may run:
// go test builds it in a 0700 directory.
func publicTestBinary(t *testing.T) string {
	t.Helper()
	public.once.Do(func() {
		self, err := os.Executable()
		if err != nil {
			public.err = err
			return
		}
		if public.dir, err = os.MkdirTemp("", "commy-ebpf-"); err != nil {
			public.err = err
			return
		}
		if err := os.Chmod(public.dir, 0o755); err != nil {
			public.err = err
			return
		}
		public.exe = filepath.Join(public.dir, filepath.Base(self))
		public.err = copyFile(public.exe, self, 0o755)
	})
	if public.err != nil {
		t.Fatal(public.err)
	}
	return public.exe
}

func copyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func cleanupHelpers() {
	if public.dir != "" {
		os.RemoveAll(public.dir)
	}
}

// openFDs lists this process's descriptors and what they refer to.
func openFDs() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return []string{err.Error()}
	}
	var fds []string
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds = append(fds, e.Name()+"="+target)
	}
	sort.Strings(fds)
	return fds
}
