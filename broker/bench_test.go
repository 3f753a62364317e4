package broker_test

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
)

// BenchmarkRoundTrip compares a request through the broker with a raw Unix
// socket echo of a frame of the same size, in the same run: the gap is what
// the broker adds (decode, dispatch, policy, encode).
func BenchmarkRoundTrip(b *testing.B) {
	h := startBench(b)
	b.Run("raw-echo", func(b *testing.B) {
		dir := b.TempDir()
		l, err := net.Listen("unix", filepath.Join(dir, "e.sock"))
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				c.Write(buf[:n])
			}
		}()
		c, err := net.Dial("unix", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		frame := mustFrame(&ipc.Heartbeat{Header: ipc.Header{ID: 1}})
		buf := make([]byte, len(frame))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.Write(frame)
			io.ReadFull(c, buf)
		}
	})
	b.Run("broker-heartbeat", func(b *testing.B) {
		r := h.raw(b, true)
		req := &ipc.Heartbeat{}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			req.ID = 0
			r.do(req)
		}
	})
	b.Run("broker-read-64B", func(b *testing.B) {
		r := h.raw(b, true)
		req := &ipc.ReadVariable{ServiceID: "bench_s", VariableName: "v64"}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			req.ID = 0
			r.do(req)
		}
	})
	b.Run("broker-write-64B", func(b *testing.B) {
		r := h.raw(b, true)
		req := &ipc.WriteVariable{ServiceID: "bench_s", VariableName: "v64", Data: make([]byte, 64)}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			req.ID = 0
			r.do(req)
		}
	})
}

// BenchmarkPipelined sends 64 requests before reading the 64 replies: the
// broker batches the replies into fewer writes.
func BenchmarkPipelined(b *testing.B) {
	h := startBench(b)
	r := h.raw(b, true)
	const depth = 64
	var frames []byte
	for i := 0; i < depth; i++ {
		frames = append(frames, mustFrame(&ipc.ReadVariable{Header: ipc.Header{ID: uint64(i + 1)}, ServiceID: "bench_s", VariableName: "v64"})...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += depth {
		r.conn.WriteFrame(frames, nil)
		for j := 0; j < depth; j++ {
			if _, err := r.conn.ReadFrame(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkFanout measures one write with 16 subscribers: the notice is
// encoded once for all of them.
func BenchmarkFanout(b *testing.B) {
	h := startBench(b)
	for i := 0; i < 16; i++ {
		s := h.raw(b, true)
		s.do(&ipc.Subscribe{ServiceID: "bench_s"})
		go func() {
			for {
				if _, err := s.conn.ReadFrame(); err != nil {
					return
				}
			}
		}()
	}
	w := h.raw(b, true)
	req := &ipc.WriteVariable{ServiceID: "bench_s", VariableName: "v64", Data: make([]byte, 64)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.ID = 0
		w.do(req)
	}
}

func startBench(b *testing.B) *harness {
	h := startTB(b, broker.Config{})
	r := h.raw(b, true)
	r.do(&ipc.CreateTenant{TenantID: "bench"})
	r.do(&ipc.CreateService{TenantID: "bench", ServiceName: "s"})
	for _, n := range []int{64, 4096} {
		r.do(&ipc.AllocateVariable{ServiceID: "bench_s", VariableName: fmt.Sprintf("v%d", n), InitialData: make([]byte, n)})
	}
	return h
}
