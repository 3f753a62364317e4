//go:build linux

package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// mountNSEnv is set in a test binary re-executed in its own mount namespace,
// where it may mount tracefs.
const mountNSEnv = "COMMY_EBPF_TEST_MOUNTNS"

// loadOrSkip loads a probe, skipping only when not root or when the kernel
// does not support it, and closes it at the end of the test.
func loadOrSkip(tb testing.TB, opts Options) *Probe {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_BPF and CAP_PERFMON)")
	}
	p, err := Load(opts)
	if errors.Is(err, ErrNotSupported) && os.Getenv(mountNSEnv) == "" {
		tb.Skipf("probe not supported here: %v", err)
	}
	if err != nil {
		tb.Fatalf("Load: %+v", err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Error(err)
		}
	})
	return p
}

// watch stats path and watches it.
func watch(tb testing.TB, p *Probe, path string) unix.Stat_t {
	tb.Helper()
	st := stat(tb, path)
	if err := p.Watch(path, st.Dev, st.Ino); err != nil {
		tb.Fatal(err)
	}
	return st
}

func stat(tb testing.TB, path string) unix.Stat_t {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		tb.Fatal(os.NewSyscallError("stat", err))
	}
	return st
}

// next returns the next event, failing after a few seconds without one.
func next(t *testing.T, p *Probe) Event {
	t.Helper()
	p.SetDeadline(time.Now().Add(5 * time.Second))
	ev, err := p.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return ev
}

// expect reads the next event and compares it with want. Time must be
// recent and TID set; they are not compared otherwise.
func expect(t *testing.T, p *Probe, what string, want Event) Event {
	t.Helper()
	got := next(t, p)
	if d := time.Since(got.Time); d < -time.Second || d > 10*time.Second {
		t.Errorf("%s: event time %v is %v from now", what, got.Time, -d)
	}
	if got.TID == 0 {
		t.Errorf("%s: TID is 0", what)
	}
	cmp := got
	cmp.Time, cmp.TID = time.Time{}, 0
	if cmp != want {
		t.Errorf("%s:\n got  %+v\n want %+v", what, cmp, want)
	}
	return got
}

// fields parses "key value key value ..." helper output into numbers.
func fields(t *testing.T, line string) map[string]int64 {
	t.Helper()
	f := strings.Fields(line)
	m := make(map[string]int64)
	for i := 0; i+1 < len(f); i += 2 {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			t.Fatalf("helper output %q: %v", line, err)
		}
		m[f[i]] = n
	}
	return m
}

func comm(exe string) string {
	c := filepath.Base(exe)
	if len(c) > 15 {
		c = c[:15]
	}
	return c
}

// TestAudit runs the access scenarios at each attach point.
func TestAudit(t *testing.T) {
	for _, ap := range attachPoints {
		kind, _, _ := strings.Cut(ap.name, "/")
		t.Run(kind, func(t *testing.T) {
			if ap.ready != nil && ap.ready() != nil {
				inMountNS(t, "^TestAudit$/^"+kind+"$")
				if os.Getenv(mountNSEnv) == "" {
					return
				}
			}
			testAudit(t, ap.name)
		})
	}
}

// inMountNS makes tracefs available: in a re-executed test binary it mounts
// tracefs; otherwise it re-executes the tests matching run in a new mount
// namespace, so the host's mounts stay untouched.
func inMountNS(t *testing.T, run string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount tracefs in a mount namespace")
	}
	if os.Getenv(mountNSEnv) != "" {
		if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
			t.Fatal(os.NewSyscallError("mount", err))
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1", "-test.v", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), mountNSEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("in a new mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("re-executed test: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("re-executed test did not run %s", t.Name())
	}
}

func testAudit(t *testing.T, attach string) {
	p := loadOrSkip(t, Options{attach: attach})
	if got := p.AttachPoint(); got != attach {
		t.Fatalf("AttachPoint() = %q, want %q", got, attach)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	selfPID := uint32(os.Getpid())

	// A data dir like the broker's: <dir 0700>/<tenant 0700>/<service 0600>,
	// with an unrelated file next to the service file.
	tenant := filepath.Join(t.TempDir(), "data", "tenant")
	if err := os.MkdirAll(tenant, 0o700); err != nil {
		t.Fatal(err)
	}
	svc := filepath.Join(tenant, "svc.mem")
	other := filepath.Join(tenant, "other.mem")
	for _, f := range []string{svc, other} {
		if err := os.WriteFile(f, make([]byte, mapSize), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st := watch(t, p, svc)
	file := Event{Dev: st.Dev, Ino: st.Ino}

	// The unrelated file, opened and mapped, must not show up: the next
	// event has to be the broker's own open below.
	h := startHelper(t, self, "open", other, nil)
	if r := fields(t, h.result(t)); r["open"] < 0 || r["mmap"] < 0 {
		t.Fatalf("helper could not open and map %s: %v", other, r)
	}
	h.finish()

	// The broker itself opens the service file: marked Self.
	fd, err := unix.Open(svc, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	want := file
	want.Op, want.PID, want.Comm, want.Exe, want.Path = OpOpen, selfPID, comm(self), self, svc
	want.Flags, want.Result, want.Self = unix.O_RDONLY|unix.O_CLOEXEC, int64(fd), true
	expect(t, p, "broker open", want)

	t.Run("denied", func(t *testing.T) {
		exe := publicTestBinary(t)
		h := startHelper(t, exe, "open", svc, &syscall.Credential{Uid: 65534, Gid: 65534})
		if r := fields(t, h.result(t)); r["open"] != -int64(unix.EACCES) {
			t.Fatalf("uid 65534 open: %v, want EACCES", r)
		}
		want := file
		want.Op, want.PID, want.UID, want.GID, want.Comm, want.Exe, want.Path = OpOpen, h.pid(), 65534, 65534, comm(exe), exe, svc
		want.Flags, want.Result = unix.O_RDONLY|unix.O_CLOEXEC, -int64(unix.EACCES)
		expect(t, p, "denied open", want)
	})

	for _, mode := range []string{"open", "openat2"} {
		t.Run(mode+"+mmap", func(t *testing.T) {
			h := startHelper(t, self, mode, svc, nil)
			r := fields(t, h.result(t))
			want := file
			want.Op, want.PID, want.Comm, want.Exe, want.Path = OpOpen, h.pid(), comm(self), self, svc
			want.Flags, want.Result = unix.O_RDONLY|unix.O_CLOEXEC, r["open"]
			expect(t, p, mode, want)
			want.Op, want.Path, want.Flags, want.MapFlags, want.Result = OpMmap, "", unix.PROT_READ, unix.MAP_SHARED, r["mmap"]
			expect(t, p, "mmap", want)
		})
	}

	t.Run("passed fd", func(t *testing.T) {
		// A client that got a read-only fd over SCM_RIGHTS maps it without
		// opening anything; its attempt to map it writable fails and is
		// reported too.
		h := startPassedFD(t, self, fd)
		r := fields(t, h.result(t))
		if r["mmapw"] != -int64(unix.EACCES) || r["mmap"] < 0 {
			t.Fatalf("helper: %v", r)
		}
		want := file
		want.Op, want.PID, want.Comm, want.Exe = OpMmap, h.pid(), comm(self), self
		want.Flags, want.MapFlags, want.Result = unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED, r["mmapw"]
		expect(t, p, "writable mmap", want)
		want.Flags, want.Result = unix.PROT_READ, r["mmap"]
		expect(t, p, "mmap", want)
	})

	t.Run("memfd", func(t *testing.T) {
		mfd, err := unix.MemfdCreate("commy-test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(os.NewSyscallError("memfd_create", err))
		}
		defer unix.Close(mfd)
		if err := unix.Ftruncate(mfd, mapSize); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
			t.Fatal(err)
		}
		var mst unix.Stat_t
		if err := unix.Fstat(mfd, &mst); err != nil {
			t.Fatal(err)
		}
		if err := p.Watch("", mst.Dev, mst.Ino); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := p.Unwatch("", mst.Dev, mst.Ino); err != nil {
				t.Error(err)
			}
		}()
		mem := Event{Dev: mst.Dev, Ino: mst.Ino}

		h := startPassedFD(t, self, mfd)
		r := fields(t, h.result(t))
		want := mem
		want.Op, want.PID, want.Comm, want.Exe = OpMmap, h.pid(), comm(self), self
		want.Flags, want.MapFlags, want.Result = unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED, r["mmapw"]
		if r["mmapw"] != -int64(unix.EPERM) {
			t.Errorf("writable mmap of a write-sealed memfd: %d, want EPERM", r["mmapw"])
		}
		expect(t, p, "writable mmap", want)
		want.Flags, want.Result = unix.PROT_READ, r["mmap"]
		expect(t, p, "mmap", want)

		// Bypassing the broker through its /proc fd link.
		link := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), mfd)
		h = startHelper(t, self, "open", link, nil)
		r = fields(t, h.result(t))
		want = mem
		want.Op, want.PID, want.Comm, want.Exe, want.Path = OpOpen, h.pid(), comm(self), self, link
		want.Flags, want.Result = unix.O_RDONLY|unix.O_CLOEXEC, r["open"]
		expect(t, p, "open by /proc link", want)
		want.Op, want.Path, want.Flags, want.MapFlags, want.Result = OpMmap, "", unix.PROT_READ, unix.MAP_SHARED, r["mmap"]
		expect(t, p, "mmap", want)
	})

	if t.Failed() {
		return
	}
	s := p.Stats()
	if s.Events != 12 || s.Lost != 0 || s.Watched != 1 {
		t.Errorf("Stats() = %+v, want 12 events, none lost, 1 watched", s)
	}

	// After Unwatch the service file is quiet: the next event is the
	// sentinel open of the other, still watched, file.
	if err := p.Unwatch(svc, st.Dev, st.Ino); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Watched != 0 {
		t.Errorf("after Unwatch: Stats() = %+v, want 0 watched", s)
	}
	h = startHelper(t, self, "open", svc, nil)
	h.result(t)
	h.finish()
	ost := watch(t, p, other)
	ofd, err := unix.Open(other, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(ofd)
	want = Event{Dev: ost.Dev, Ino: ost.Ino, Op: OpOpen, PID: selfPID, Comm: comm(self), Exe: self, Path: other,
		Flags: unix.O_RDONLY | unix.O_CLOEXEC, Result: int64(ofd), Self: true}
	expect(t, p, "sentinel", want)
}

// startPassedFD starts a "recv" helper and passes it fd over SCM_RIGHTS.
func startPassedFD(t *testing.T, exe string, fd int) *helper {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(os.NewSyscallError("socketpair", err))
	}
	defer unix.Close(pair[0])
	child := os.NewFile(uintptr(pair[1]), "helper socket")
	defer child.Close()
	h := startHelper(t, exe, "recv", "", nil, child)
	sendFD(t, pair[0], fd)
	return h
}

// TestLoadNeedsPrivilege shows that an unprivileged process cannot load the
// probe, and that Load says why with ErrNotSupported and the cause.
func TestLoadNeedsPrivilege(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user")
	}
	h := startHelper(t, publicTestBinary(t), "load", "", &syscall.Credential{Uid: 65534, Gid: 65534})
	line := h.result(t)
	t.Log(line)
	if !strings.HasPrefix(line, "notsupported=true eperm=true ") {
		t.Errorf("Load as uid 65534: %s; want ErrNotSupported wrapping EPERM", line)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	p := loadOrSkip(t, Options{})
	done := make(chan error, 1)
	go func() {
		_, err := p.Read()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Read block
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("pending Read: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.Read(); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
	if err := p.Watch("/x", 0, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if err := p.Unwatch("/x", 0, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Unwatch after Close: %v, want ErrClosed", err)
	}
}

// TestLost fills a one-page ring buffer without reading it.
func TestLost(t *testing.T) {
	p := loadOrSkip(t, Options{RingSize: 1})
	path := filepath.Join(t.TempDir(), "svc.mem")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	watch(t, p, path)
	const n = 100
	for range n {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	s := p.Stats()
	if s.Events+s.Lost != n || s.Lost == 0 {
		t.Fatalf("Stats() = %+v, want %d events and lost in all, some lost", s, n)
	}
	var read uint64
	p.SetDeadline(time.Now().Add(time.Second))
	for {
		ev, err := p.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Self || ev.Op != OpOpen {
			t.Errorf("event %+v, want the test's own open", ev)
		}
		read++
	}
	if read != s.Events {
		t.Errorf("read %d events, Stats says %d", read, s.Events)
	}
}

func TestWatchErrors(t *testing.T) {
	p := loadOrSkip(t, Options{MaxWatched: 2})
	dir := t.TempDir()
	st := stat(t, dir)
	for _, c := range []struct {
		name     string
		path     string
		dev, ino uint64
	}{
		{"relative path", "svc.mem", st.Dev, st.Ino},
		{"unclean path", dir + "/./svc.mem", st.Dev, st.Ino},
		{"long path", "/" + strings.Repeat("x", 300), st.Dev, st.Ino},
		{"device beyond dev_t", dir, unix.Mkdev(1<<12, 0), st.Ino},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := p.Watch(c.path, c.dev, c.ino); err == nil {
				t.Errorf("Watch(%q, %#x, %d) succeeded", c.path, c.dev, c.ino)
			}
		})
	}
	if err := p.Unwatch(dir, st.Dev, st.Ino); !errors.Is(err, ErrNotWatched) {
		t.Errorf("Unwatch of an unwatched file: %v, want ErrNotWatched", err)
	}
	for range 2 {
		if err := p.Watch(dir, st.Dev, st.Ino); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Watch("", st.Dev, st.Ino); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Watched; got != 1 {
		t.Errorf("Watched = %d, want 1", got)
	}
	// The path moves to a second file; the first stays watched.
	if err := p.Watch(dir, st.Dev, st.Ino+1); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Watched; got != 2 {
		t.Errorf("Watched = %d, want 2", got)
	}
	// MaxWatched is 2: a third file does not fit.
	if err := p.Watch("", st.Dev, st.Ino+2); err == nil {
		t.Error("Watch beyond MaxWatched succeeded")
	}
	// Unwatching the path for the first file leaves it naming the second.
	if err := p.Unwatch(dir, st.Dev, st.Ino); err != nil {
		t.Fatal(err)
	}
	pk := pathKey(dir)
	var owner probeFileKey
	if err := p.maps.WatchedPaths.Lookup(&pk, &owner); err != nil || owner.Ino != st.Ino+1 {
		t.Errorf("watched_paths[%q] = %+v, %v; want inode %d", dir, owner, err, st.Ino+1)
	}
	if got := p.Stats().Watched; got != 2 {
		t.Errorf("Watched = %d, want 2 (the first file stays watched without a path)", got)
	}
	if err := p.Unwatch(dir, st.Dev, st.Ino); !errors.Is(err, ErrNotWatched) {
		t.Errorf("second Unwatch: %v, want ErrNotWatched", err)
	}
	for _, w := range []struct {
		path string
		ino  uint64
	}{{"", st.Ino}, {dir, st.Ino + 1}} {
		if err := p.Unwatch(w.path, st.Dev, w.ino); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Stats().Watched; got != 0 {
		t.Errorf("Watched = %d, want 0", got)
	}
	if err := p.maps.WatchedPaths.Lookup(&pk, &owner); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("watched_paths[%q] after Unwatch: %v, want ErrKeyNotExist", dir, err)
	}
}

func TestLoadOptions(t *testing.T) {
	bad := []Options{{RingSize: -1}, {MaxWatched: -1}}
	if os.Geteuid() == 0 {
		bad = append(bad, Options{attach: "kprobe/nowhere"})
	}
	for _, opts := range bad {
		if p, err := Load(opts); err == nil || errors.Is(err, ErrNotSupported) {
			if p != nil {
				p.Close()
			}
			t.Errorf("Load(%+v) = %v, want an error other than ErrNotSupported", opts, err)
		}
	}
}

func TestDefaultAttachPoint(t *testing.T) {
	p := loadOrSkip(t, Options{})
	t.Logf("attach point: %s", p.AttachPoint())
	for _, ap := range attachPoints {
		if p.AttachPoint() == ap.name {
			return
		}
	}
	t.Errorf("AttachPoint() = %q, not one of the attach points", p.AttachPoint())
}

func FuzzDecode(f *testing.F) {
	size := binary.Size(probeEvent{})
	f.Add(make([]byte, size))
	f.Add([]byte{1, 2, 3})
	p := &Probe{}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := p.decode(raw)
		if err == nil && len(raw) < size {
			t.Errorf("decoded %d bytes into %+v", len(raw), ev)
		}
	})
}

// TestFallback replaces the attach points with failing ones to check that
// Load falls back in order and classifies what it could not do.
func TestFallback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF and CAP_PERFMON)")
	}
	working := attachPoints[1] // raw_tracepoint/sys_exit
	failing := func(name string, err error) attachPoint {
		return attachPoint{name: name, prog: working.prog, ready: func() error { return err }, attach: working.attach}
	}
	bug := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"R1 invalid mem access 'scalar'"}}
	for _, c := range []struct {
		name         string
		points       []attachPoint
		attached     string
		notSupported bool
		causes       int
	}{
		{"first fails", []attachPoint{failing("a", unix.EPERM), working}, working.name, false, 0},
		{"all unsupported", []attachPoint{failing("a", unix.EPERM), failing("b", os.ErrNotExist)}, "", true, 2},
		{"verifier rejects", []attachPoint{failing("a", unix.EPERM), failing("b", bug)}, "", false, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			saved := attachPoints
			attachPoints = c.points
			defer func() { attachPoints = saved }()

			p, err := Load(Options{})
			if c.attached != "" {
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				if got := p.AttachPoint(); got != c.attached {
					t.Errorf("AttachPoint() = %q, want %q", got, c.attached)
				}
				return
			}
			if err == nil {
				p.Close()
				t.Fatal("Load succeeded")
			}
			t.Log(err)
			if errors.Is(err, ErrNotSupported) != c.notSupported {
				t.Errorf("errors.Is(err, ErrNotSupported) = %t, want %t", !c.notSupported, c.notSupported)
			}
			var ae attachError
			if !errors.As(err, &ae) || len(ae) != c.causes {
				t.Errorf("attach causes: %d, want %d", len(ae), c.causes)
			}
			if !errors.Is(err, unix.EPERM) {
				t.Error("the first cause, EPERM, is not in the chain")
			}
		})
	}
}

// TestSelfPID checks that only Options.SelfPID's accesses are marked Self.
func TestSelfPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.mem")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		selfPID int
		self    bool
	}{
		{"default", 0, true},
		{"this process", os.Getpid(), true},
		{"another process", 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := loadOrSkip(t, Options{SelfPID: c.selfPID})
			watch(t, p, path)
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
			if ev := next(t, p); ev.PID != uint32(os.Getpid()) || ev.Self != c.self {
				t.Errorf("event PID %d Self %t, want PID %d Self %t", ev.PID, ev.Self, os.Getpid(), c.self)
			}
		})
	}
}
