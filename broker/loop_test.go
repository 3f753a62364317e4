package broker_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
)

// loopWay is one way loopWays serves.
type loopWay struct {
	name           string
	noLoop, noRing bool
}

// loopWays runs f with the event loop, reading through io_uring or not,
// and without it (Config.NoLoop), and checks that the loop served requests
// only when it was on. With the loop, a connection yields to it whenever
// it waits for input, even alone.
func loopWays(t *testing.T, cfg broker.Config, f func(t *testing.T, h *harness, way loopWay)) {
	for _, way := range []loopWay{{"event-loop", false, false}, {"event-loop-no-io-uring", false, true}, {"no-event-loop", true, false}} {
		t.Run(way.name, func(t *testing.T) {
			if !way.noLoop {
				t.Cleanup(broker.LoopAlways())
			}
			cfg := cfg
			cfg.NoLoop, cfg.NoIOURing = way.noLoop, way.noRing
			h := start(t, cfg)
			f(t, h, way)
			if n := broker.LoopRequests(h.b); way.noLoop != (n == 0) {
				t.Fatalf("the event loop served %d requests (off: %v)", n, way.noLoop)
			}
		})
	}
}

// TestLoopServes: many clients reading and writing at once each get their
// own replies, in order, whichever way the broker serves them.
func TestLoopServes(t *testing.T) {
	uring := ipc.IOURing() == nil
	loopWays(t, broker.Config{}, func(t *testing.T, h *harness, way loopWay) {
		before := ipc.IOURingRecvs()
		defer func() {
			// Only a pass with two sessions or more reads through the ring.
			n := ipc.IOURingRecvs() - before
			if want := uring && !way.noLoop && !way.noRing; want != (n > 0) {
				t.Errorf("%d reads through io_uring (wanted: %v)", n, want)
			}
		}()
		seedService(t, h, "t", "s")
		const clients, rounds = 8, 300
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := range clients {
			r := h.raw(t, true)
			name := fmt.Sprint("v", i)
			if rep := r.do(&ipc.AllocateVariable{ServiceID: "t_s", VariableName: name, InitialData: []byte("0"), Capacity: 64}); code(rep) != "" {
				t.Fatalf("allocate: %#v", rep)
			}
			wg.Go(func() {
				for j := range rounds {
					val := fmt.Appendf(nil, "%d:%d", i, j)
					if rep, ok := r.do(&ipc.WriteVariable{ServiceID: "t_s", VariableName: name, Data: val}).(*ipc.VariableWritten); !ok {
						errs <- fmt.Errorf("client %d: write %d: %#v", i, j, rep)
						return
					}
					rep, ok := r.do(&ipc.ReadVariable{ServiceID: "t_s", VariableName: name}).(*ipc.VariableData)
					if !ok || !bytes.Equal(rep.Data, val) {
						errs <- fmt.Errorf("client %d: read %d: %#v, want %q", i, j, rep, val)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestLoopHandsBack: what the loop does not serve itself goes back to the
// session's reader, and is served there in order: a request that passes a
// descriptor, replies the socket has no room for, the end of input after a
// request, a frame cut short.
func TestLoopHandsBack(t *testing.T) {
	t.Run("descriptor", func(t *testing.T) {
		loopWays(t, broker.Config{}, func(t *testing.T, h *harness, _ loopWay) {
			seedService(t, h, "t", "s")
			r := h.raw(t, true)
			for range 3 {
				time.Sleep(20 * time.Millisecond) // the broker waits for input
				if rep := r.do(&ipc.Heartbeat{}); rep.Kind() != "Heartbeat" {
					t.Fatalf("heartbeat: %#v", rep)
				}
			}
			time.Sleep(20 * time.Millisecond)
			if rep := r.do(&ipc.GetServiceFilePath{TenantID: "t", ServiceName: "s"}); rep.Kind() != "ServiceFilePath" {
				t.Fatalf("file path: %#v", rep)
			}
			f, ok := r.conn.TakeFD()
			if !ok {
				t.Fatal("no descriptor with the reply")
			}
			f.Close()
			if rep := r.do(&ipc.Heartbeat{}); rep.Kind() != "Heartbeat" {
				t.Fatalf("heartbeat after: %#v", rep)
			}
		})
	})
	t.Run("full socket", func(t *testing.T) {
		// Replies larger than the loop sends whole or not at all, and
		// smaller ones, to requests sent together or one by one until the
		// socket is full: nothing is read until all are sent.
		for _, tc := range []struct {
			size, n  int
			together bool
			gap      time.Duration // between requests sent one by one
		}{{4 << 10, 600, true, 0}, {60 << 10, 40, false, 2 * time.Millisecond}, {100, 4000, false, 0}} {
			t.Run(fmt.Sprintf("%d-together=%v", tc.size, tc.together), func(t *testing.T) {
				loopWays(t, broker.Config{}, func(t *testing.T, h *harness, _ loopWay) {
					testFullSocket(t, h, tc.size, tc.n, tc.together, tc.gap)
				})
			})
		}
	})
	t.Run("busy socket", func(t *testing.T) {
		// A subscriber that reads nothing while notices fill its socket,
		// then asks something: the reply waits its turn, and arrives.
		loopWays(t, broker.Config{}, func(t *testing.T, h *harness, _ loopWay) {
			seedService(t, h, "t", "s")
			sub := h.raw(t, true)
			if rep := sub.do(&ipc.Subscribe{ServiceID: "t_s"}); rep.Kind() != "Subscribed" {
				t.Fatalf("subscribe: %#v", rep)
			}
			w := h.raw(t, true)
			value := bytes.Repeat([]byte{1}, 1<<10)
			if rep := w.do(&ipc.AllocateVariable{ServiceID: "t_s", VariableName: "w", InitialData: value}); code(rep) != "" {
				t.Fatalf("allocate: %#v", rep)
			}
			for i := range 2000 {
				value[0] = byte(i)
				// Each to its own variable, so that no notice merges.
				name := fmt.Sprint("w", i%400)
				if i < 400 {
					w.do(&ipc.AllocateVariable{ServiceID: "t_s", VariableName: name, InitialData: value})
				}
				if rep := w.do(&ipc.WriteVariable{ServiceID: "t_s", VariableName: name, Data: value}); code(rep) != "" {
					t.Fatalf("write: %#v", rep)
				}
			}
			time.Sleep(20 * time.Millisecond) // the broker waits for input
			id := sub.send(&ipc.Heartbeat{})
			sub.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				body, err := sub.conn.ReadFrame()
				if err != nil {
					t.Fatalf("waiting for the reply: %v", err)
				}
				if m, _, _ := ipc.Decode(body); m.Hdr().ID == id {
					break
				}
			}
		})
	})
	t.Run("end after request", func(t *testing.T) {
		loopWays(t, broker.Config{}, func(t *testing.T, h *harness, _ loopWay) {
			seedService(t, h, "t", "s")
			uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			var enc ipc.Encoder
			send := func(m ipc.Message) {
				f, err := enc.Frame(m)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := uc.Write(f); err != nil {
					t.Fatal(err)
				}
			}
			conn, err := ipc.NewConn(uc, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			send(&ipc.Hello{Header: ipc.Header{ID: 1}, Protocol: 1})
			send(&ipc.Heartbeat{Header: ipc.Header{ID: 2}})
			for range 2 {
				if _, err := conn.ReadFrame(); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(20 * time.Millisecond) // the broker waits for input
			send(&ipc.ReadVariable{Header: ipc.Header{ID: 3}, ServiceID: "t_s", VariableName: "v"})
			uc.CloseWrite()
			body, err := conn.ReadFrame()
			if err != nil {
				t.Fatalf("the reply to the last request: %v", err)
			}
			if m, _, _ := ipc.Decode(body); m.Hdr().ID != 3 || m.Kind() != "VariableData" {
				t.Fatalf("reply: %#v", m)
			}
			if _, err := conn.ReadFrame(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the reply: %v, want EOF", err)
			}
		})
	})
	t.Run("frame cut short", func(t *testing.T) {
		loopWays(t, broker.Config{FrameTimeout: 300 * time.Millisecond}, func(t *testing.T, h *harness, _ loopWay) {
			var enc ipc.Encoder
			f, err := enc.Frame(&ipc.Heartbeat{Header: ipc.Header{ID: 9}})
			if err != nil {
				t.Fatal(err)
			}
			f = bytes.Clone(f)
			// Finished later: served.
			slow := h.raw(t, true)
			time.Sleep(20 * time.Millisecond) // the broker waits for input
			slow.do(&ipc.Heartbeat{})
			time.Sleep(20 * time.Millisecond)
			slow.conn.WriteFrame(f[:5], nil)
			time.Sleep(100 * time.Millisecond)
			slow.conn.WriteFrame(f[5:], nil)
			if rep := slow.recv(); rep.Hdr().ID != 9 || rep.Kind() != "Heartbeat" {
				t.Fatalf("a frame sent in two parts: %#v", rep)
			}
			// Never finished: the connection ends at the frame timeout,
			// whether what came is short of the read buffer (1 KiB at
			// first) or fills it.
			big, err := enc.Frame(&ipc.WriteVariable{Header: ipc.Header{ID: 10}, ServiceID: "t_s", VariableName: "v", Data: make([]byte, 1500)})
			if err != nil {
				t.Fatal(err)
			}
			for _, part := range [][]byte{f[:5], bytes.Clone(big[:1024])} {
				testFrameCut(t, h, part)
			}
		})
	})
}

// testFrameCut sends part of a frame and never the rest: the connection
// must end at the frame timeout.
func testFrameCut(t *testing.T, h *harness, part []byte) {
	stuck := h.raw(t, true)
	stuck.do(&ipc.Heartbeat{})
	time.Sleep(20 * time.Millisecond)
	stuck.conn.WriteFrame(part, nil)
	stuck.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		body, err := stuck.conn.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("a frame never finished: %v, want the end of the connection", err)
		}
		if m, _, _ := ipc.Decode(body); code(m) != "PROTOCOL_ERROR" {
			t.Fatalf("a frame never finished: %#v", m)
		}
	}
}

func testFullSocket(t *testing.T, h *harness, size, n int, together bool, gap time.Duration) {
	seedService(t, h, "t", "s")
	r := h.raw(t, true)
	value := bytes.Repeat([]byte{7}, size)
	if rep := r.do(&ipc.AllocateVariable{ServiceID: "t_s", VariableName: "big", InitialData: value}); code(rep) != "" {
		t.Fatalf("allocate: %#v", rep)
	}
	time.Sleep(20 * time.Millisecond) // the broker waits for input
	r.do(&ipc.Heartbeat{})
	var enc ipc.Encoder
	var frames [][]byte
	for i := range n {
		f, err := enc.Frame(&ipc.ReadVariable{Header: ipc.Header{ID: uint64(1000 + i)}, ServiceID: "t_s", VariableName: "big"})
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, bytes.Clone(f))
	}
	sent := make(chan error, 1)
	go func() {
		if together {
			sent <- r.conn.WriteFrame(bytes.Join(frames, nil), nil)
			return
		}
		for _, f := range frames {
			if err := r.conn.WriteFrame(f, nil); err != nil {
				sent <- err
				return
			}
			time.Sleep(gap)
		}
		sent <- nil
	}()
	time.Sleep(100*time.Millisecond + time.Duration(n)*gap) // let the broker fill the socket
	for i := range n {
		rep, ok := r.recv().(*ipc.VariableData)
		if !ok || rep.ID != uint64(1000+i) || !bytes.Equal(rep.Data, value) {
			t.Fatalf("reply %d: %T id %d", i, rep, rep.Hdr().ID)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// TestLoopWhenBusy: a client that has the broker to itself is served by its
// own reader; clients busy at once are served by the loop.
func TestLoopWhenBusy(t *testing.T) {
	h := start(t, broker.Config{})
	r := h.raw(t, true)
	for range 200 {
		if rep := r.do(&ipc.Heartbeat{}); rep.Kind() != "Heartbeat" {
			t.Fatalf("heartbeat: %#v", rep)
		}
	}
	if n := broker.LoopRequests(h.b); n > 10 {
		t.Fatalf("the loop served %d of 200 requests of a lone client", n)
	}
	var wg sync.WaitGroup
	for range 8 {
		r := h.raw(t, true)
		wg.Go(func() {
			for range 200 {
				r.do(&ipc.Heartbeat{})
			}
		})
	}
	wg.Wait()
	if n := broker.LoopRequests(h.b); n < 200 {
		t.Fatalf("the loop served %d of 1600 requests of 8 busy clients", n)
	}
}

// TestLoopsShare: with several loops, the busy clients are shared out
// among them, and every loop serves its share.
func TestLoopsShare(t *testing.T) {
	t.Cleanup(broker.LoopAlways())
	h := start(t, broker.Config{Loops: 3})
	var wg sync.WaitGroup
	for range 6 {
		r := h.raw(t, true)
		wg.Go(func() {
			for range 100 {
				if rep := r.do(&ipc.Heartbeat{}); rep.Kind() != "Heartbeat" {
					t.Errorf("heartbeat: %#v", rep)
					return
				}
			}
		})
	}
	wg.Wait()
	shares := broker.LoopShares(h.b)
	if len(shares) != 3 {
		t.Fatalf("%d loops, want 3", len(shares))
	}
	for i, n := range shares {
		if n < 100 {
			t.Fatalf("loop %d served %d requests (all: %v)", i, n, shares)
		}
	}
}

// TestLoopsAlone: a loop serving one session in two passes in a row hands
// it back to its reader only if no other connection was served in between,
// by another loop either: two clients taking turns, each on a loop of its
// own, stay with their loops.
func TestLoopsAlone(t *testing.T) {
	t.Cleanup(broker.LoopAlways())
	h := start(t, broker.Config{Loops: 2})
	a, b := h.raw(t, true), h.raw(t, true)
	turns := func(n int) {
		for range n {
			for _, r := range []*raw{a, b} {
				if rep := r.do(&ipc.Heartbeat{}); rep.Kind() != "Heartbeat" {
					t.Fatalf("heartbeat: %#v", rep)
				}
			}
		}
	}
	// A reader may serve a few requests before it first yields.
	turns(10)
	before, backs := broker.LoopShares(h.b), broker.LoopHandBacks(h.b)
	turns(100)
	after := broker.LoopShares(h.b)
	if after[0]-before[0] < 50 || after[1]-before[1] < 50 { // a loop each
		t.Fatalf("the loops served %v, then %v, of 2 clients' 100 requests each (%d hand-backs)",
			before, after, broker.LoopHandBacks(h.b)-backs)
	}
	if n := broker.LoopHandBacks(h.b) - backs; n > 0 {
		t.Fatalf("%d hand-backs of clients taking turns", n)
	}
	// Alone, a client goes back to its reader (which yields again, as
	// LoopAlways has it).
	for range 10 {
		a.do(&ipc.Heartbeat{})
	}
	if n := broker.LoopHandBacks(h.b) - backs; n == 0 {
		t.Fatal("a client alone was not handed back")
	}
}
