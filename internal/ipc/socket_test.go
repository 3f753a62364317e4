package ipc

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// polledPair returns a Conn over an InputPolled and the plain Conn at the
// other end of a real socketpair.
func polledPair(t *testing.T) (*Conn, *InputPolled, *Conn) {
	t.Helper()
	a, b := pair(t, 1<<20, true)
	p, err := NewInputPolled(a.uc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConn(p, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p, b
}

// ready reports whether the epoll instance fd has an event now.
func ready(t *testing.T, fd int) bool {
	t.Helper()
	ev := make([]unix.EpollEvent, 1)
	n, err := unix.EpollWait(fd, ev, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func inFD(t *testing.T, p *InputPolled) int {
	t.Helper()
	var fd int
	rc, _ := p.in.SyscallConn()
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// TestInputPolled: frames, descriptors and batches go both ways through an
// InputPolled, and the runtime poller hears of it only when there is input:
// the peer reading what it sent, which makes room, is no event.
func TestInputPolled(t *testing.T) {
	c, p, peer := polledPair(t)
	in := inFD(t, p)
	frame := frameOf([]byte("reply"))
	if err := c.WriteFrame(frame, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := peer.ReadFrame(); err != nil || string(got) != "reply" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	if ready(t, in) {
		t.Fatal("the socket is watched for room: the peer's read is an event")
	}
	peer.WriteFrame(frameOf([]byte("request")), nil)
	if !ready(t, in) {
		t.Fatal("input is no event")
	}
	if got, err := c.ReadFrame(); err != nil || string(got) != "request" {
		t.Fatalf("read %q, %v", got, err)
	}
	// A descriptor, and several frames in one write.
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.WriteFrame(frameOf([]byte("fd")), f); err != nil {
		t.Fatal(err)
	}
	if got, err := peer.ReadFrame(); err != nil || string(got) != "fd" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	if g, ok := peer.TakeFD(); !ok {
		t.Fatal("no descriptor arrived")
	} else {
		g.Close()
	}
	if err := c.WriteFrames(net.Buffers{frameOf([]byte("one")), frameOf([]byte("two"))}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"one", "two"} {
		if got, err := peer.ReadFrame(); err != nil || string(got) != want {
			t.Fatalf("peer read %q, %v; want %q", got, err, want)
		}
	}
}

// TestInputPolledWaitsForRoom: a write to a peer that does not read waits,
// is woken when the peer reads, and leaves the poller unarmed for room
// afterwards; a write deadline ends a wait; Close wakes a waiting reader.
func TestInputPolledWaitsForRoom(t *testing.T) {
	c, p, peer := polledPair(t)
	big := bytes.Repeat([]byte{1}, 900<<10) // more than the socket holds
	frame := frameOf(big)
	done := make(chan error, 1)
	go func() { done <- c.WriteFrame(frame, nil) }()
	select {
	case err := <-done:
		t.Fatalf("a write larger than the socket holds did not wait: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if got, err := peer.ReadFrame(); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("peer read %d bytes, %v", len(got), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.out == nil || ready(t, p.outfd) {
		t.Fatal("the room instance is missing, or still armed after the write")
	}

	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if err := c.WriteFrame(frame, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past its deadline: %v", err)
	}

	go func() {
		_, err := c.ReadFrame()
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("read woken by Close: %v, want ErrClosed", err)
	}
	if err := c.WriteFrame(frameOf([]byte("x")), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
}
