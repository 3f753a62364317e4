package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/testutil"
)

// benchValue is the value measure reads and writes, of n bytes.
func benchValue(n int) []byte {
	v := make([]byte, n)
	for i := range v {
		v[i] = byte('a' + i%26)
	}
	return v
}

// TestDriveServers runs the read and write scenarios, driven from one
// loop, against a real broker and a real Redis, with several clients and
// pipelined batches: each counts exactly the requests asked for, with one
// sample per batch, and the writes reach the server.
func TestDriveServers(t *testing.T) {
	ctx := context.Background()
	sock := serve(t)
	cl := dial(t, sock)
	cm, err := NewCommy(ctx, cl, sock, "drive", "bench", 64)
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	rd, err := DialRedis(ctx, testutil.StartRedis(t), "commy-bench-test", 64)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	// Clear the values, so that the write scenario is seen to write.
	for _, sys := range []System{cm, rd} {
		c, err := sys.Conn()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Write(1, make([]byte, 64)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	const requests, pipeline = 240, 4
	cfg := Config{Scenarios: []string{ScenarioRead, ScenarioWrite}, Clients: []int{1, 5}, Requests: requests,
		Pipeline: pipeline, Warmup: 8, Alternate: 2}
	rs, err := Run(ctx, cfg, cm, rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 8 {
		t.Fatalf("%d results, want 8: %+v", len(rs), rs)
	}
	for _, r := range rs {
		if r.Ops != requests || len(r.Latencies) != requests/pipeline || r.Pipeline != pipeline || r.OpsPerSec <= 0 ||
			r.Latencies[0] <= 0 {
			t.Errorf("%s %s: %d ops in %d samples of pipeline %d, %.0f ops/s; want %d ops in %d samples", r.System,
				r.Label(), r.Ops, len(r.Latencies), r.Pipeline, r.OpsPerSec, requests, requests/pipeline)
		}
	}
	svc, err := cl.Service(ctx, "drive", "bench")
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := svc.Read(ctx, Variable); err != nil || !bytes.Equal(v, benchValue(64)) {
		t.Errorf("commy holds %q, %v after the write scenario; want %q", v, err, benchValue(64))
	}
	c, err := rd.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.command([]byte("GET"), []byte(rd.key))
	if v, err := c.roundTrip(1); err != nil || !bytes.Equal(v, benchValue(64)) {
		t.Errorf("redis holds %q, %v after the write scenario; want %q", v, err, benchValue(64))
	}

	// For a while instead: whole batches, one sample each.
	cfg.Scenarios, cfg.Clients, cfg.Duration, cfg.Alternate = []string{ScenarioRead}, []int{3}, 100*time.Millisecond, 1
	rs, err = Run(ctx, cfg, cm, rd)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Ops == 0 || r.Ops != int64(len(r.Latencies))*pipeline || r.Seconds < 0.1 {
			t.Errorf("%s for 100ms: %d ops, %d samples in %.3fs", r.System, r.Ops, len(r.Latencies), r.Seconds)
		}
	}
}

// fakeServer answers the batches one client sends on its end of a socket
// pair as commy or Redis would, and checks them: each batch must hold
// per whole requests, with fresh ids (commy), writing value, and must come
// only after every reply to the one before. The replies to the first warm
// batches go in one write; the rest in three, the first byte, then all but
// the last, then the last, a pause apart, and no byte of the next batch
// may arrive before the last. failAt numbers the batch whose last reply is
// an error, if any.
type fakeServer struct {
	kind   string // "commy" or "redis"
	per    int
	warm   int
	pause  time.Duration
	value  []byte
	failAt int

	lastID uint64
}

// request parses the request at the start of b, and returns its size (0
// if b holds only part of it) and its reply.
func (f *fakeServer) request(b []byte) (int, []byte, error) {
	if f.kind == "redis" {
		n, last, err := respValue(b)
		if n == 0 || err != nil {
			return 0, nil, err
		}
		switch {
		case bytes.HasPrefix(b, []byte("*2\r\n$3\r\nGET\r\n")):
			return n, fmt.Appendf(nil, "$%d\r\n%s\r\n", len(f.value), f.value), nil
		case bytes.HasPrefix(b, []byte("*3\r\n$3\r\nSET\r\n")) && bytes.Equal(last, f.value):
			return n, []byte("+OK\r\n"), nil
		}
		return 0, nil, fmt.Errorf("request %.40q", b[:n])
	}
	body, size := ipc.SplitFrame(b)
	if size == 0 {
		return 0, nil, nil
	}
	m, h, err := ipc.Decode(body)
	if err != nil {
		return 0, nil, err
	}
	if f.lastID++; h.ID != f.lastID {
		return 0, nil, fmt.Errorf("request id %d, want %d", h.ID, f.lastID)
	}
	var reply ipc.Message
	switch m := m.(type) {
	case *ipc.ReadVariable:
		reply = &ipc.VariableData{Header: ipc.Header{ID: h.ID}, ServiceID: m.ServiceID, VariableName: m.VariableName, Data: f.value, Version: h.ID}
	case *ipc.WriteVariable:
		if !bytes.Equal(m.Data, f.value) {
			return 0, nil, fmt.Errorf("request %d writes %.20q..., not the value", h.ID, m.Data)
		}
		reply = &ipc.VariableWritten{Header: ipc.Header{ID: h.ID}, ServiceID: m.ServiceID, VariableName: m.VariableName, Version: h.ID}
	default:
		return 0, nil, fmt.Errorf("request %s", m.Kind())
	}
	frame, err := ipc.EncodeFrame(reply)
	return size, frame, err
}

// errorReply is the error reply to the last request parsed.
func (f *fakeServer) errorReply() []byte {
	if f.kind == "redis" {
		return []byte("-ERR boom\r\n")
	}
	frame, err := ipc.EncodeFrame(&ipc.Error{Header: ipc.Header{ID: f.lastID}, ErrorCode: "VALUE_TOO_LARGE", Message: "boom"})
	if err != nil {
		panic(err)
	}
	return frame
}

// serve answers batches until the client closes its end. It closes conn,
// so that a client it found fault with is not left waiting.
func (f *fakeServer) serve(conn *net.UnixConn) error {
	defer conn.Close()
	var in []byte
	buf := make([]byte, 64<<10)
	for batch := 0; ; batch++ {
		var out []byte
		for k := range f.per {
			for {
				size, reply, err := f.request(in)
				if err != nil {
					return fmt.Errorf("batch %d: %w", batch, err)
				}
				if size > 0 {
					in = in[size:]
					if batch == f.failAt && k == f.per-1 {
						reply = f.errorReply()
					}
					out = append(out, reply...)
					break
				}
				n, err := conn.Read(buf)
				if n == 0 && err != nil && k == 0 && len(in) == 0 {
					return nil // the client is done
				}
				if err != nil {
					return fmt.Errorf("batch %d: %d requests in: %w", batch, k, err)
				}
				in = append(in, buf[:n]...)
			}
		}
		if len(in) > 0 {
			return fmt.Errorf("batch %d: %d bytes more than its %d requests", batch, len(in), f.per)
		}
		if batch < f.warm {
			if _, err := conn.Write(out); err != nil {
				return err
			}
			continue
		}
		if _, err := conn.Write(out[:1]); err != nil {
			return err
		}
		time.Sleep(f.pause)
		if _, err := conn.Write(out[1 : len(out)-1]); err != nil {
			return err
		}
		// Nothing of the next batch may come before its last reply.
		conn.SetReadDeadline(time.Now().Add(f.pause))
		n, err := conn.Read(buf)
		conn.SetReadDeadline(time.Time{})
		if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("batch %d: %d bytes, %v before its last reply", batch, n, err)
		}
		if _, err := conn.Write(out[len(out)-1:]); err != nil {
			return err
		}
	}
}

// fakeClients makes n clients of kind, each with a fakeServer like f on
// the other end of a socket pair. The servers run until the clients close;
// wait waits for them and returns their first error.
func fakeClients(t *testing.T, kind string, n int, f fakeServer) (conns []Conn, wait func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		end, peer := socketPair(t)
		switch kind {
		case "commy":
			c, err := ipc.NewConn(end, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, newCommyClient(&commyConn{c: c}, "t/s"))
		case "redis":
			nc, err := ipc.NewStream(end)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, newRedisConn(&Redis{key: "k"}, nc))
		}
		f := f
		f.kind = kind
		wg.Go(func() {
			if err := f.serve(peer); err != nil {
				errs <- err
			}
		})
	}
	t.Cleanup(func() { // should a test end before its clients close
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	return conns, func() error {
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
}

// opener hands out conns, one a call.
func opener(conns []Conn) func() (Conn, error) {
	return func() (Conn, error) {
		c := conns[0]
		conns = conns[1:]
		return c, nil
	}
}

// TestDriveSplitReplies drives clients whose replies arrive in pieces, of
// values bigger than one read, and whose write batches are bigger than the
// socket takes at once: a batch counts once, when the last byte of its
// last reply is in (so every sample spans the server's pauses), each
// reply is checked, and the server gets every request whole and in order.
func TestDriveSplitReplies(t *testing.T) {
	const per, clients, batches, pause = 3, 2, 3, 15 * time.Millisecond
	value := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16) // 300 KiB, over a read and a socket's buffer
	for _, kind := range []string{"commy", "redis"} {
		for _, sc := range []string{ScenarioRead, ScenarioWrite} {
			t.Run(kind+"/"+sc, func(t *testing.T) {
				conns, wait := fakeClients(t, kind, clients, fakeServer{per: per, warm: 1, pause: pause, value: value, failAt: -1})
				batch := func(c Conn) ([]byte, error) { return c.Reads(per) }
				if sc == ScenarioWrite {
					batch = func(c Conn) ([]byte, error) { return c.Writes(per, value) }
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cfg := Config{Requests: clients * batches * per, Pipeline: per, Warmup: per}
				lat, ops, _, err := drive(ctx, cfg, "", clients, opener(conns), batch)
				if serr := wait(); serr != nil {
					t.Fatalf("server: %v (the run: %v)", serr, err)
				}
				if err != nil {
					t.Fatal(err)
				}
				if ops != clients*batches*per || len(lat) != clients*batches {
					t.Fatalf("%d ops in %d samples, want %d in %d", ops, len(lat), clients*batches*per, clients*batches)
				}
				for _, l := range lat {
					if l < 2*pause {
						t.Fatalf("a batch took %v, less than the %v its last reply was held back: counted early", l, 2*pause)
					}
				}
				if kind == "redis" && !bytes.Equal(conns[0].(*redisConn).bulk, value) && sc == ScenarioRead {
					t.Errorf("the last GET reply parsed as %.20q...", conns[0].(*redisConn).bulk)
				}
				if kind == "commy" && sc == ScenarioRead && !bytes.Equal(conns[0].(*commyClient).data.Data, value) {
					t.Errorf("the last reply decoded as %.20q...", conns[0].(*commyClient).data.Data)
				}
			})
		}
	}
}

// TestDriveErrorReply: an error reply, even the last of a batch, ends the
// run with that error.
func TestDriveErrorReply(t *testing.T) {
	const per = 3
	for _, kind := range []string{"commy", "redis"} {
		t.Run(kind, func(t *testing.T) {
			conns, wait := fakeClients(t, kind, 1, fakeServer{per: per, warm: 1, pause: time.Millisecond, value: []byte("v"), failAt: 2})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _, _, err := drive(ctx, Config{Requests: 10 * per, Pipeline: per, Warmup: per}, "", 1, opener(conns),
				func(c Conn) ([]byte, error) { return c.Reads(per) })
			wait() // the server's error, the connection closing under it, is no matter
			switch kind {
			case "commy":
				var re *ipc.RemoteError
				if !errors.As(err, &re) || re.Code != "VALUE_TOO_LARGE" || re.Message != "boom" || !errors.Is(err, ipc.ErrValueTooLarge) {
					t.Fatalf("run ended with %v, want the error reply VALUE_TOO_LARGE: boom", err)
				}
			case "redis":
				if !errors.Is(err, ErrRedis) {
					t.Fatalf("run ended with %v, want %v", err, ErrRedis)
				}
			}
		})
	}
}

// TestDriveCancel: a run whose server never answers ends when its context
// does.
func TestDriveCancel(t *testing.T) {
	end, _ := socketPair(t)
	nc, err := ipc.NewStream(end)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, _, _, err = drive(ctx, Config{Requests: 10, Pipeline: 1}, "", 1, opener([]Conn{newRedisConn(&Redis{key: "k"}, nc)}),
		func(c Conn) ([]byte, error) { return c.Reads(1) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run ended with %v, want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("the run took %v to see its context end", d)
	}
}
