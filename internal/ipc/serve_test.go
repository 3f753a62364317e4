package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

func frameOf(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// serveEcho runs ServeFrames on c, writing every body back, and returns
// what ServeFrames returned on the channel. reads is, after each reply, how
// many reads c had made.
func serveEcho(c *Conn, reads *atomic.Int64) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- c.ServeFrames(func(body []byte) error {
			reads.Store(int64(c.recvs))
			return c.WriteFrame(frameOf(body), nil)
		})
	}()
	return done
}

// TestServeFrames: ServeFrames serves frames in order whatever their size
// and however they arrive (one at a time, pipelined, split mid-frame).
func TestServeFrames(t *testing.T) {
	a, b := pair(t, 1<<20, false)
	var reads atomic.Int64
	done := serveEcho(b, &reads)
	roundTrip := func(body []byte) {
		t.Helper()
		if err := a.WriteFrame(frameOf(body), nil); err != nil {
			t.Fatal(err)
		}
		got, err := a.ReadFrame()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(body), len(got), err)
		}
	}
	for i := range 200 {
		roundTrip([]byte{byte(i), 1, 2, 3})
	}
	roundTrip(bytes.Repeat([]byte{9}, 300<<10)) // grows the buffer
	var burst []byte
	for i := range 300 {
		burst = append(burst, frameOf([]byte{byte(i), byte(i >> 8)})...)
	}
	if err := a.WriteFrame(burst, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		got, err := a.ReadFrame()
		if err != nil || got[0] != byte(i) || got[1] != byte(i>>8) {
			t.Fatalf("pipelined frame %d: %v %v", i, got, err)
		}
	}
	split := frameOf([]byte("split in two"))
	a.WriteFrame(split[:6], nil)
	time.Sleep(20 * time.Millisecond) // the server waits with half a frame
	a.WriteFrame(split[6:], nil)
	if got, err := a.ReadFrame(); err != nil || string(got) != "split in two" {
		t.Fatalf("split frame: %q %v", got, err)
	}
	a.uc.CloseWrite()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("ServeFrames at the end of input: %v, want EOF", err)
	}
}

// TestServeFramesErrors: ServeFrames stops on what fn returns, on a frame
// over the limit, on input ending mid-frame, and with ErrIdle on silence,
// after which it serves again.
func TestServeFramesErrors(t *testing.T) {
	t.Run("fn", func(t *testing.T) {
		a, b := pair(t, 0, false)
		stop := errors.New("stop")
		a.WriteFrame(append(frameOf([]byte("x")), frameOf([]byte("y"))...), nil)
		var seen []string
		err := b.ServeFrames(func(body []byte) error {
			seen = append(seen, string(body))
			return stop
		})
		if !errors.Is(err, stop) || len(seen) != 1 {
			t.Fatalf("err %v after %q", err, seen)
		}
		if got, err := b.ReadFrame(); err != nil || string(got) != "y" {
			t.Fatalf("the frame after: %q %v", got, err)
		}
	})
	t.Run("too-large", func(t *testing.T) {
		a, b := pair(t, 100, false)
		a.WriteFrame(binary.BigEndian.AppendUint32(nil, 101), nil)
		if err := b.ServeFrames(func([]byte) error { return nil }); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("err %v, want ErrFrameTooLarge", err)
		}
	})
	t.Run("mid-frame", func(t *testing.T) {
		a, b := pair(t, 0, false)
		a.WriteFrame(frameOf([]byte("cut short"))[:7], nil)
		a.uc.CloseWrite()
		if err := b.ServeFrames(func([]byte) error { return nil }); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err %v, want ErrUnexpectedEOF", err)
		}
	})
	t.Run("last-frame-then-end", func(t *testing.T) {
		// The frame and the end of input arrive before ServeFrames reads:
		// one readiness event for both, so it must read past the frame.
		a, b := pair(t, 0, false)
		a.WriteFrame(frameOf([]byte("last")), nil)
		a.uc.CloseWrite()
		time.Sleep(50 * time.Millisecond) // idle: the poller takes the event now
		done := make(chan error, 1)
		var served []string
		go func() {
			done <- b.ServeFrames(func(body []byte) error { served = append(served, string(body)); return nil })
		}()
		select {
		case err := <-done:
			if !errors.Is(err, io.EOF) || len(served) != 1 || served[0] != "last" {
				t.Fatalf("served %q, then %v; want the frame, then EOF", served, err)
			}
		case <-time.After(5 * time.Second):
			b.Close()
			<-done
			t.Fatal("ServeFrames missed the end of input that came with the last frame")
		}
	})
	t.Run("idle", func(t *testing.T) {
		a, b := pair(t, 0, false)
		const idle = 100 * time.Millisecond
		b.SetReadTimeouts(idle, time.Second)
		for range 2 { // a second call waits its full idle time again
			start := time.Now()
			if err := b.ServeFrames(func([]byte) error { return nil }); !errors.Is(err, ErrIdle) {
				t.Fatalf("err %v, want ErrIdle", err)
			}
			if d := time.Since(start); d < idle {
				t.Fatalf("idle after %v, before %v", d, idle)
			}
		}
		done := serveEcho(b, new(atomic.Int64))
		a.WriteFrame(frameOf([]byte("after")), nil)
		if got, err := a.ReadFrame(); err != nil || string(got) != "after" {
			t.Fatalf("after idling: %q %v", got, err)
		}
		a.uc.CloseWrite()
		<-done
	})
}

// TestServeFramesSpin: with SetSpin, a client that answers fast is read
// again after each reply instead of waited for; the spin ends when the
// client goes quiet, and a client whose last request came slower than the
// spin is not spun for.
func TestServeFramesSpin(t *testing.T) {
	a, b := pair(t, 0, false)
	const window = 20 * time.Millisecond
	b.SetSpin(window)
	var reads atomic.Int64
	done := serveEcho(b, &reads)
	roundTrip := func() {
		t.Helper()
		if err := a.WriteFrame(frameOf([]byte("ping")), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip()
	const n = 50
	before := reads.Load()
	for range n {
		roundTrip()
	}
	if r := reads.Load() - before; r < 4*n {
		t.Fatalf("%d reads for %d requests answered at once: no spin (two each without)", r, n)
	}
	if !spinHeld(true, time.Second) {
		t.Fatal("no spin after the reply to a fast client")
	}
	if !spinHeld(false, time.Second) {
		t.Fatal("the spin did not end when the client went quiet")
	}
	time.Sleep(2 * window) // the next request comes slower than the spin
	roundTrip()
	if spinHeld(true, window+10*time.Millisecond) {
		t.Fatal("spun for a client slower than the spin")
	}
	a.uc.CloseWrite()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("ServeFrames: %v", err)
	}
	if spin.held.Load() {
		t.Fatal("the spin is still held after ServeFrames returned")
	}
}

// TestServeFramesSpinYields: a spin ends as soon as another connection is
// served, whether or not that one spins itself.
func TestServeFramesSpinYields(t *testing.T) {
	a, b := pair(t, 0, false)
	c, d := pair(t, 0, false)
	const window = 2 * time.Second
	b.SetSpin(window)
	var reads atomic.Int64
	doneB := serveEcho(b, &reads)
	doneD := serveEcho(d, &reads)
	roundTrip := func(x *Conn) {
		t.Helper()
		if err := x.WriteFrame(frameOf([]byte("ping")), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := x.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		roundTrip(a) // fast: the spin starts
	}
	if !spinHeld(true, time.Second) {
		t.Fatal("no spin after the replies to a fast client")
	}
	roundTrip(c) // another connection, which does not spin, is served
	if !spinHeld(false, window/4) {
		t.Fatal("the spin went on while another connection was served")
	}
	a.uc.CloseWrite()
	c.uc.CloseWrite()
	for _, done := range []<-chan error{doneB, doneD} {
		if err := <-done; !errors.Is(err, io.EOF) {
			t.Fatalf("ServeFrames: %v", err)
		}
	}
}

// spinHeld reports whether the process's spin is held (want true) or free
// (false) within the time given.
func spinHeld(want bool, within time.Duration) bool {
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if spin.held.Load() == want {
			return true
		}
	}
	return false
}
