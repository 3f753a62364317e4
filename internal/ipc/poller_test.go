package ipc

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"testing"
	"time"
)

// serveReady serves what c's socket holds now through a ReadBatch of one.
func serveReady(c *Conn, fn func([]byte) error) (bool, error) {
	var b ReadBatch
	b.Add(c)
	b.Read()
	defer b.Reset()
	return b.Serve(0, fn)
}

// pollNow is Wait without the wait: the tokens of the sockets with input
// now.
func pollNow(p *Poller) []uint64 {
	p.n = 0
	p.rc.Control(func(uintptr) { p.poll() })
	return p.tokens(nil)
}

// collect is a ReadBatch.Serve callback that keeps copies of the bodies.
func collect(got *[][]byte) func([]byte) error {
	return func(body []byte) error {
		*got = append(*got, bytes.Clone(body))
		return nil
	}
}

func bodies(n ...byte) [][]byte {
	var out [][]byte
	for _, b := range n {
		out = append(out, []byte{b, b, b})
	}
	return out
}

func framesOf(bs [][]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, frameOf(b)...)
	}
	return out
}

// TestPoller: a Poller reports the sockets with input by token, again and
// again while they have it (level-triggered), wakes a Wait for new input,
// stops at Remove, and ends a Wait at its deadline and at Close.
func TestPoller(t *testing.T) {
	c1, _, peer1 := polledPair(t)
	c2, _, peer2 := polledPair(t)
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const tok1, tok2 = 1<<32 | 7, 2<<32 | 9
	if err := p.Add(c1, tok1); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(c2, tok2); err != nil {
		t.Fatal(err)
	}
	if got := pollNow(p); len(got) != 0 {
		t.Fatalf("no input yet, polled %v", got)
	}
	p.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := p.Wait(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait past the deadline: %v", err)
	}
	p.SetDeadline(time.Now().Add(5 * time.Second))

	if err := peer1.WriteFrame(framesOf(bodies(1)), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Wait(nil); err != nil || !slices.Equal(got, []uint64{tok1}) {
		t.Fatalf("wait: %v, %v; want [%d]", got, err, uint64(tok1))
	}
	for range 2 { // still there: reported again
		if got := pollNow(p); !slices.Equal(got, []uint64{tok1}) {
			t.Fatalf("unread input polled as %v", got)
		}
	}
	var got [][]byte
	if keep, err := serveReady(c1, collect(&got)); !keep || err != nil {
		t.Fatalf("serve: keep %v, %v", keep, err)
	}
	if !slices.EqualFunc(got, bodies(1), bytes.Equal) {
		t.Fatalf("served %q", got)
	}
	if got := pollNow(p); len(got) != 0 {
		t.Fatalf("all read, polled %v", got)
	}

	// New input wakes a Wait that began with nothing to report.
	woke := make(chan []uint64, 1)
	go func() {
		toks, _ := p.Wait(nil)
		woke <- toks
	}()
	time.Sleep(20 * time.Millisecond)
	if err := peer2.WriteFrame(framesOf(bodies(2)), nil); err != nil {
		t.Fatal(err)
	}
	if toks := <-woke; !slices.Equal(toks, []uint64{tok2}) {
		t.Fatalf("woken with %v", toks)
	}
	if err := p.Remove(c2); err != nil {
		t.Fatal(err)
	}
	if got := pollNow(p); len(got) != 0 {
		t.Fatalf("removed, still polled: %v", got)
	}

	p.SetDeadline(time.Time{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		p.Close()
	}()
	if _, err := p.Wait(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("wait across Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Add(c1, tok1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
}

// TestServeReady: a ReadBatch serves the whole frames one read brings and
// keeps the Conn only when no frame is left unfinished; a deferred frame,
// and one cut short, are then served by ServeFrames, in order; the end of
// input and fn's errors are reported.
func TestServeReady(t *testing.T) {
	t.Run("whole", func(t *testing.T) {
		c, _, peer := polledPair(t)
		peer.WriteFrame(framesOf(bodies(1, 2, 3)), nil)
		var got [][]byte
		if keep, err := serveReady(c, collect(&got)); !keep || err != nil {
			t.Fatalf("keep %v, %v", keep, err)
		}
		if !slices.EqualFunc(got, bodies(1, 2, 3), bytes.Equal) {
			t.Fatalf("served %q", got)
		}
		// Nothing to read: kept, nothing served.
		if keep, err := serveReady(c, collect(&got)); !keep || err != nil || len(got) != 3 {
			t.Fatalf("empty socket: keep %v, %v, served %d", keep, err, len(got))
		}
	})
	t.Run("cut", func(t *testing.T) {
		c, _, peer := polledPair(t)
		all := framesOf(bodies(1, 2))
		peer.WriteFrame(all[:len(all)-2], nil)
		var got [][]byte
		if keep, err := serveReady(c, collect(&got)); keep || err != nil {
			t.Fatalf("a frame cut short: keep %v, %v", keep, err)
		}
		if !slices.EqualFunc(got, bodies(1), bytes.Equal) {
			t.Fatalf("served %q", got)
		}
		peer.WriteFrame(all[len(all)-2:], nil)
		peer.Close()
		err := c.ServeFrames(collect(&got))
		if !errors.Is(err, io.EOF) || !slices.EqualFunc(got, bodies(1, 2), bytes.Equal) {
			t.Fatalf("then ServeFrames: %v, served %q", err, got)
		}
	})
	t.Run("deferred", func(t *testing.T) {
		c, _, peer := polledPair(t)
		peer.WriteFrame(framesOf(bodies(1, 2, 3)), nil)
		var got [][]byte
		keep, err := serveReady(c, func(body []byte) error {
			if body[0] == 2 {
				return ErrDeferFrame
			}
			got = append(got, bytes.Clone(body))
			return nil
		})
		if keep || err != nil || !slices.EqualFunc(got, bodies(1), bytes.Equal) {
			t.Fatalf("keep %v, %v, served %q", keep, err, got)
		}
		peer.Close()
		err = c.ServeFrames(collect(&got))
		if !errors.Is(err, io.EOF) || !slices.EqualFunc(got, bodies(1, 2, 3), bytes.Equal) {
			t.Fatalf("then ServeFrames: %v, served %q", err, got)
		}
	})
	t.Run("end", func(t *testing.T) {
		c, _, peer := polledPair(t)
		peer.WriteFrame(framesOf(bodies(1)), nil)
		peer.Close()
		var got [][]byte
		keep, err := serveReady(c, collect(&got))
		if keep && err == nil {
			keep, err = serveReady(c, collect(&got)) // the end came after the frame
		}
		if keep || !errors.Is(err, io.EOF) || len(got) != 1 {
			t.Fatalf("keep %v, %v, served %d", keep, err, len(got))
		}
	})
	t.Run("end mid-frame", func(t *testing.T) {
		c, _, peer := polledPair(t)
		f := framesOf(bodies(1))
		peer.WriteFrame(f[:5], nil)
		peer.Close()
		var got [][]byte
		if keep, err := serveReady(c, collect(&got)); keep || err != nil {
			t.Fatalf("keep %v, %v", keep, err)
		}
		if err := c.ServeFrames(collect(&got)); !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 0 {
			t.Fatalf("then ServeFrames: %v, served %d", err, len(got))
		}
	})
	t.Run("fn fails", func(t *testing.T) {
		c, _, peer := polledPair(t)
		peer.WriteFrame(framesOf(bodies(1, 2)), nil)
		boom := errors.New("boom")
		n := 0
		keep, err := serveReady(c, func([]byte) error { n++; return boom })
		if keep || !errors.Is(err, boom) || n != 1 {
			t.Fatalf("keep %v, %v, %d calls", keep, err, n)
		}
	})
}

// TestServeFramesYield: with SetYield, ServeFrames returns ErrYield once
// the socket is empty and no frame has started, but waits for the rest of
// a frame that has.
func TestServeFramesYield(t *testing.T) {
	c, _, peer := polledPair(t)
	c.SetYield(YieldAlways)
	peer.WriteFrame(framesOf(bodies(1)), nil)
	var got [][]byte
	if err := c.ServeFrames(collect(&got)); !errors.Is(err, ErrYield) || len(got) != 1 {
		t.Fatalf("%v, served %d", err, len(got))
	}
	f := framesOf(bodies(2))
	peer.WriteFrame(f[:3], nil)
	done := make(chan error, 1)
	go func() { done <- c.ServeFrames(collect(&got)) }()
	select {
	case err := <-done:
		t.Fatalf("returned %v with a frame started", err)
	case <-time.After(100 * time.Millisecond):
	}
	peer.WriteFrame(f[3:], nil)
	if err := <-done; !errors.Is(err, ErrYield) || !slices.EqualFunc(got, bodies(1, 2), bytes.Equal) {
		t.Fatalf("%v, served %q", err, got)
	}
}

// TestServeFramesYieldWhenBusy: with YieldWhenBusy, ServeFrames waits for
// input itself while its Conn was the last one served, and yields once
// another was served since.
func TestServeFramesYieldWhenBusy(t *testing.T) {
	c, _, peer := polledPair(t)
	other, _, _ := polledPair(t)
	c.SetYield(YieldWhenBusy)
	// The first frame is sent before ServeFrames starts: with the socket
	// still empty and no frame of c served yet, it would rightly yield.
	peer.WriteFrame(framesOf(bodies(1)), nil)
	done := make(chan error, 1)
	go func() {
		done <- c.ServeFrames(func(body []byte) error {
			if body[0] == 2 {
				other.served() // as if another connection was served meanwhile
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		t.Fatalf("alone, returned %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	peer.WriteFrame(framesOf(bodies(2)), nil)
	select {
	case err := <-done:
		if !errors.Is(err, ErrYield) {
			t.Fatalf("after another was served: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting for input after another was served")
	}
}

// TestTryWritePart: TryWritePart sends what the socket takes and keeps the
// write lock while part is left, so that no other write comes between;
// FinishWrite sends the rest, in order, and lets other writes in again.
func TestTryWritePart(t *testing.T) {
	c, _, peer := polledPair(t)
	p := make([]byte, 4<<20) // more than the socket holds
	for i := range p {
		p[i] = byte(i * 7)
	}
	n, err := c.TryWritePart(p)
	if err != nil || n <= 0 || n >= len(p) {
		t.Fatalf("sent %d of %d, %v", n, len(p), err)
	}
	if ok, err := c.TryWrite([]byte{0, 0, 0, 1, 9}); ok || err != nil {
		t.Fatalf("TryWrite while part is left: %v, %v", ok, err)
	}
	if m, err := c.TryWritePart([]byte{0, 0, 0, 1, 9}); m != 0 || err != nil {
		t.Fatalf("TryWritePart while part is left: %d, %v", m, err)
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(p))
		io.ReadFull(peer.UnixConn(), b)
		got <- b
	}()
	if err := c.FinishWrite(p[n:]); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, p) {
		t.Fatal("the bytes arrived out of order")
	}
	if m, err := c.TryWritePart([]byte{0, 0, 0, 1, 9}); m != 5 || err != nil {
		t.Fatalf("after FinishWrite: %d, %v", m, err)
	}
}

// TestReadBatch: the reads of a batch, through io_uring or one recvmsg
// each, give each Conn what a read of its own would have: its frames, nothing for
// an empty socket, the end of input, and a protocol error for a descriptor
// sent where none may come.
func TestReadBatch(t *testing.T) {
	withIOURing(t, func(t *testing.T, ring bool) {
		type conn struct{ c, peer *Conn }
		var cs []conn
		for range 5 {
			c, _, peer := polledPair(t)
			cs = append(cs, conn{c, peer})
		}
		cs[0].peer.WriteFrame(framesOf(bodies(1, 2)), nil)
		// cs[1]: nothing sent.
		cs[2].peer.WriteFrame(framesOf(bodies(3)), nil)
		cs[2].peer.Close()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		pipes := openFDsOf(t, "pipe:")
		cs[3].c.allowFDs = false
		if err := cs[3].peer.WriteFrame(framesOf(bodies(4)), w); err != nil {
			t.Fatal(err)
		}
		cs[4].peer.Close()

		before := IOURingRecvs()
		var b ReadBatch
		for _, c := range cs {
			b.Add(c.c)
		}
		b.Read()
		got := make([][][]byte, len(cs))
		type outcome struct {
			keep bool
			err  error
		}
		var outs []outcome
		for i := range cs {
			keep, err := b.Serve(i, collect(&got[i]))
			outs = append(outs, outcome{keep, err})
		}
		b.Reset()
		if n := IOURingRecvs() - before; ring != (n == uint64(len(cs))) {
			t.Fatalf("%d reads through io_uring (io_uring: %v)", n, ring)
		}
		if !outs[0].keep || outs[0].err != nil || !slices.EqualFunc(got[0], bodies(1, 2), bytes.Equal) {
			t.Errorf("frames: %+v, %q", outs[0], got[0])
		}
		if !outs[1].keep || outs[1].err != nil || len(got[1]) != 0 {
			t.Errorf("empty socket: %+v, %q", outs[1], got[1])
		}
		if !outs[2].keep || outs[2].err != nil || !slices.EqualFunc(got[2], bodies(3), bytes.Equal) {
			t.Errorf("frame, then the end: %+v, %q", outs[2], got[2])
		}
		if !errors.Is(outs[3].err, ErrUnexpectedFD) || len(got[3]) != 0 {
			t.Errorf("a descriptor: %+v, %q", outs[3], got[3])
		}
		if outs[4].keep || !errors.Is(outs[4].err, io.EOF) {
			t.Errorf("the end: %+v", outs[4])
		}
		// The end that came after cs[2]'s frame, read by a second batch.
		b.Add(cs[2].c)
		b.Read()
		if keep, err := b.Serve(0, collect(&got[2])); keep || !errors.Is(err, io.EOF) {
			t.Errorf("then the end: %v, %v", keep, err)
		}
		b.Reset()
		if fds := openFDsOf(t, "pipe:"); fds != pipes {
			t.Errorf("%d pipe descriptors open, %d before: a received one leaked", fds, pipes)
		}
	})
}

// openFDsOf counts this process's descriptors whose link starts with
// prefix.
func openFDsOf(t *testing.T, prefix string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); len(l) >= len(prefix) && l[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}
