package ipc

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// withIOURing runs f with io_uring on, then off, as SendBatch's two ways of
// writing; the io_uring run is skipped only where the kernel refuses it.
func withIOURing(t *testing.T, f func(t *testing.T, ring bool)) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("io_uring=%v", on), func(t *testing.T) {
			setIOURing(on)
			t.Cleanup(func() { setIOURing(true) })
			if on {
				if err := IOURing(); err != nil {
					t.Skipf("the kernel refuses io_uring here: %v", err)
				}
			}
			f(t, on)
		})
	}
}

// TestSendBatch: each write in a batch comes out as TryWrite's would.
func TestSendBatch(t *testing.T) {
	withIOURing(t, func(t *testing.T, ring bool) {
		type conn struct {
			c, peer *Conn
			frame   []byte
			ok      bool
			err     error // matched with errors.Is; any error when errAny
			errAny  bool
		}
		var cs []*conn
		add := func(frame []byte, ok bool) *conn {
			c, _, peer := polledPair(t)
			x := &conn{c: c, peer: peer, frame: frame, ok: ok}
			cs = append(cs, x)
			return x
		}
		for i := range 3 {
			add(frameOf([]byte(fmt.Sprint("notice ", i))), true)
		}
		full := add(frameOf([]byte("no room")), false)
		for {
			if ok, err := full.c.TryWrite(frameOf(make([]byte, 1000))); err != nil {
				t.Fatal(err)
			} else if !ok {
				break
			}
		}
		gone := add(frameOf([]byte("peer gone")), false)
		gone.errAny = true
		gone.peer.Close()
		closed := add(frameOf([]byte("closed")), false)
		closed.err = ErrClosed
		closed.c.Close()
		add(frameOf(make([]byte, MaxTryWrite)), false) // too large: the blocking way
		plainA, plainB := pair(t, 1<<20, false)        // not an InputPolled
		cs = append(cs, &conn{c: plainA, peer: plainB, frame: frameOf([]byte("plain")), ok: true})

		before := uringSends.Load()
		var b SendBatch
		for _, x := range cs {
			b.Add(x.c, x.frame)
		}
		n := 0
		b.Flush(func(i int, ok bool, err error) {
			if i != n {
				t.Errorf("result %d came as %d", n, i)
			}
			n++
			x := cs[i]
			switch {
			case ok != x.ok:
				t.Errorf("write %d (%q): ok %v, want %v (err %v)", i, x.frame[4:min(len(x.frame), 20)], ok, x.ok, err)
			case x.errAny && err == nil, x.err != nil && !errors.Is(err, x.err), !x.errAny && x.err == nil && err != nil:
				t.Errorf("write %d (%q): err %v, want %v", i, x.frame[4:min(len(x.frame), 20)], err, x.err)
			}
		})
		if n != len(cs) {
			t.Fatalf("%d results for %d writes", n, len(cs))
		}
		if len(b.items) != 0 {
			t.Fatalf("%d writes left after Flush", len(b.items))
		}
		for i, x := range cs[:3] {
			if got, err := x.peer.ReadFrame(); err != nil || !bytes.Equal(got, x.frame[4:]) {
				t.Fatalf("peer %d read %q, %v", i, got, err)
			}
		}
		if got, err := plainB.ReadFrame(); err != nil || string(got) != "plain" {
			t.Fatalf("plain peer read %q, %v", got, err)
		}
		want := uint64(0)
		if ring {
			want = 3 // the plain socket's write is TryWrite's
		}
		if got := uringSends.Load() - before; got != want {
			t.Fatalf("%d writes through io_uring, want %d", got, want)
		}
	})
}

// TestSendBatchSendto: a batch told to, writes one connection at a time
// even where io_uring is there.
func TestSendBatchSendto(t *testing.T) {
	var b SendBatch
	b.Sendto = true
	var peers []*Conn
	for range 5 {
		c, _, peer := polledPair(t)
		b.Add(c, frameOf([]byte("sendto")))
		peers = append(peers, peer)
	}
	before := IOURingSends()
	b.Flush(func(i int, ok bool, err error) {
		if !ok || err != nil {
			t.Errorf("write %d: %v, %v", i, ok, err)
		}
	})
	if n := IOURingSends() - before; n != 0 {
		t.Fatalf("%d writes through io_uring", n)
	}
	for _, p := range peers {
		if got, err := p.ReadFrame(); err != nil || string(got) != "sendto" {
			t.Fatalf("read %q, %v", got, err)
		}
	}
}

// TestSendBatchClose: with connections closed while batches write to
// them, every peer reads only whole frames of its own, and those left open
// keep getting them.
func TestSendBatchClose(t *testing.T) {
	withIOURing(t, func(t *testing.T, ring bool) {
		const conns, rounds = 40, 50
		cs := make([]*Conn, conns)
		peers := make([]*Conn, conns)
		for i := range cs {
			cs[i], _, peers[i] = polledPair(t)
		}
		var wg sync.WaitGroup
		got := make([]int, conns)
		for i, p := range peers {
			wg.Go(func() {
				for {
					body, err := p.ReadFrame()
					if err != nil {
						return
					}
					if string(body) != fmt.Sprint("frame for ", i) {
						t.Errorf("peer %d read %q", i, body)
						return
					}
					got[i]++
				}
			})
		}
		frames := make([][]byte, conns)
		for i := range frames {
			frames[i] = frameOf([]byte(fmt.Sprint("frame for ", i)))
		}
		wg.Go(func() {
			for i := 0; i < conns; i += 2 {
				cs[i].Close()
			}
		})
		var b SendBatch
		for range rounds {
			for i, c := range cs {
				b.Add(c, frames[i])
			}
			b.Flush(func(int, bool, error) {})
		}
		for _, c := range cs {
			c.Close()
		}
		wg.Wait()
		for i := 1; i < conns; i += 2 {
			if got[i] == 0 {
				t.Errorf("peer %d of an open connection got nothing", i)
			}
		}
	})
}

// TestSendBatchHoldsOpen: a socket closed while its send waits in a batch
// stays open until the send is made, so the send cannot reach another
// socket that took its descriptor's number.
func TestSendBatchHoldsOpen(t *testing.T) {
	if err := IOURing(); err != nil {
		t.Skipf("the kernel refuses io_uring here: %v", err)
	}
	c, _, peer := polledPair(t)
	var others []int
	closed := make(chan struct{})
	beforeSubmit = func() {
		go func() { c.Close(); close(closed) }()
		time.Sleep(50 * time.Millisecond) // Close's chance to free the descriptor
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		others = fds[:]
	}
	defer func() { beforeSubmit = nil }()
	var b SendBatch
	b.Add(c, frameOf([]byte("held")))
	b.Flush(func(_ int, ok bool, err error) {
		if !ok || err != nil {
			t.Errorf("write: %v, %v", ok, err)
		}
	})
	<-closed
	for _, fd := range others {
		if n, err := unix.Read(fd, make([]byte, 64)); n > 0 || err != unix.EAGAIN {
			t.Errorf("a socket made after the Close read %d bytes, %v", n, err)
		}
	}
	for _, fd := range others {
		unix.Close(fd)
	}
	if got, err := peer.ReadFrame(); err != nil || string(got) != "held" {
		t.Fatalf("peer read %q, %v", got, err)
	}
}

// TestIOURingLimit: an instance the kernel will not make when others are
// in use (RLIMIT_MEMLOCK before Linux 5.12) leaves io_uring on for those;
// only a refusal of the first turns it off.
func TestIOURingLimit(t *testing.T) {
	if err := IOURing(); err != nil {
		t.Skipf("the kernel refuses io_uring here: %v", err)
	}
	held := takeRing() // the pool's first instance, in use
	defer putRing(held)
	defer func(f func(uint32) (*ring, error)) { setupRing = f }(setupRing)
	setupRing = func(uint32) (*ring, error) { return nil, errors.New("over the limit") }
	var more []*ring
	for rings.made+len(more) < maxRings() { // take any idle instances, then ask for a new one
		r := takeRing()
		if r == nil {
			break
		}
		more = append(more, r)
	}
	for _, r := range more {
		defer putRing(r)
	}
	if r := takeRing(); r != nil {
		t.Fatal("a ring from a failing setup")
	}
	if err := IOURing(); err != nil {
		t.Fatalf("io_uring turned off by a later instance's failure: %v", err)
	}
}
