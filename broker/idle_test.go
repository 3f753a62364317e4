package broker_test

import (
	"runtime"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
	"golang.org/x/sys/unix"
)

// TestIdleConnectionMemory: an idle connection costs the broker at most 16
// KiB of Go memory (heap and goroutine stacks), whether it only said Hello
// or also subscribed to a service. The clients are bare descriptors, so
// that only the broker's memory grows.
func TestIdleConnectionMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector inflates stacks and heap; make test runs this test again without -race")
	}
	for _, subscribe := range []bool{false, true} {
		t.Run(map[bool]string{false: "hello", true: "subscribed"}[subscribe], func(t *testing.T) {
			idleMemory(t, subscribe)
		})
	}
}

func idleMemory(t *testing.T, subscribe bool) {
	const conns, limit = 300, 16 << 10
	h := start(t, broker.Config{MaxConnectionsPerUID: 2 * conns})
	c := h.dial(t)
	c.CreateTenant(t.Context(), "t")
	if _, err := c.CreateService(t.Context(), "t", "s"); err != nil {
		t.Fatal(err)
	}
	hello, err := ipc.EncodeFrame(&ipc.Hello{Header: ipc.Header{ID: 1}, Protocol: ipc.ProtocolVersion})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := ipc.EncodeFrame(&ipc.Subscribe{Header: ipc.Header{ID: 2}, ServiceID: "t_s"})
	if err != nil {
		t.Fatal(err)
	}
	usage := func() uint64 {
		runtime.GC()
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc + ms.StackInuse
	}
	before, goroutines := usage(), runtime.NumGoroutine()
	fds := make([]int, 0, conns)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	buf := make([]byte, 4096)
	for range conns {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: h.sock}); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, hello); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Read(fd, buf); err != nil || n < ipc.HeaderLen {
			t.Fatalf("no Welcome: %d bytes, %v", n, err)
		}
		if !subscribe {
			continue
		}
		if _, err := unix.Write(fd, sub); err != nil {
			t.Fatal(err)
		}
		n, err := unix.Read(fd, buf)
		if err != nil || n < ipc.HeaderLen {
			t.Fatalf("no Subscribed: %d bytes, %v", n, err)
		}
		if m, _, err := ipc.Decode(buf[ipc.HeaderLen:n]); err != nil || m.Kind() != "Subscribed" {
			t.Fatalf("Subscribe answered %v %v", m, err)
		}
	}
	// Each session runs one goroutine (its writer starts only when a notice
	// cannot be written at once); all are past Hello.
	if n := runtime.NumGoroutine(); n < goroutines+conns {
		t.Fatalf("%d goroutines, want %d", n, goroutines+conns)
	}
	per := (int64(usage()) - int64(before)) / conns
	t.Logf("%d bytes of broker memory per idle connection", per)
	if per > limit {
		t.Fatalf("an idle connection costs %d bytes, more than %d", per, limit)
	}
}
