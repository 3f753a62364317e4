package client_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
)

var readSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"4KiB", 4 << 10}}

// benchService starts a broker with one service holding variable "v" of n
// bytes.
func benchService(b *testing.B, n int) (*client.Client, *client.Service) {
	h := start(b, broker.Config{})
	c := h.dial(b)
	return c, service(b, c, "t", "bench", map[string][]byte{"v": make([]byte, n)})
}

// BenchmarkMappedRead reads a value through the shared-memory mapping.
func BenchmarkMappedRead(b *testing.B) {
	for _, sz := range readSizes {
		b.Run(sz.name, func(b *testing.B) {
			_, svc := benchService(b, sz.n)
			m, err := svc.Map(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			buf := make([]byte, 0, sz.n)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if buf, _, err = m.Read("v", buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSocketRead reads a value with ReadVariable over the socket, to a
// broker in the same process.
func BenchmarkSocketRead(b *testing.B) {
	for _, sz := range readSizes {
		b.Run(sz.name, func(b *testing.B) {
			_, svc := benchService(b, sz.n)
			ctx := context.Background()
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := svc.Read(ctx, "v"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWrite writes a 64-byte value with WriteVariable.
func BenchmarkWrite(b *testing.B) {
	_, svc := benchService(b, 64)
	ctx := context.Background()
	val := make([]byte, 64)
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		val[0]++
		if _, err := svc.Write(ctx, "v", val); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSync syncs a working copy of a 1 MiB service (1024 variables of
// 1 KiB) after rewriting 1% of it: every byte of 10 variables, a different
// 10 each time. It measures the diff, the lookup of the variables, one
// ReportVariableChanges of 10 KiB and the shadow update.
func BenchmarkSync(b *testing.B) {
	h := start(b, broker.Config{})
	c := h.dial(b)
	const vars, size, changed = 1024, 1 << 10, 10
	init := map[string][]byte{}
	for i := 0; i < vars; i++ {
		init[fmt.Sprintf("v%04d", i)] = make([]byte, size)
	}
	svc := service(b, c, "t", "sync", init)
	ctx := context.Background()
	wc, err := svc.WorkingCopy(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer wc.Close()
	names := wc.Names()
	b.SetBytes(vars * size)
	b.ReportAllocs()
	next := 0
	for b.Loop() {
		for k := 0; k < changed; k++ {
			v := wc.Bytes(names[next%vars])
			next += vars/changed + 1
			for i := range v {
				v[i]++
			}
		}
		sent, err := wc.Sync(ctx)
		if err != nil || len(sent) != changed {
			b.Fatalf("sent %d variables, %v", len(sent), err)
		}
	}
}
