package simd

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// benchBuffers returns n random bytes, an equal copy, and a copy in which
// 1% of the 4 KiB pages (at least one) have four consecutive bytes changed.
func benchBuffers(n int) (a, same, changed []byte) {
	const page = 4 << 10
	r := rand.New(rand.NewPCG(7, 8))
	a = make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			a[i+j] = byte(v >> (8 * j))
		}
	}
	same = slices.Clone(a)
	changed = slices.Clone(a)
	pages := n / page
	count := max(1, pages/100)
	for i := range count {
		p := i*pages/count + r.IntN(pages/count)
		off := p*page + r.IntN(page-4)
		for j := range 4 {
			changed[off+j] ^= 0x5a
		}
	}
	return a, same, changed
}

// BenchmarkDiff compares bytes.Equal (baseline, unchanged buffers only:
// it stops at the first difference), Diff, each implementation, and a
// byte-at-a-time loop. Throughput counts the bytes of one buffer.
func BenchmarkDiff(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"4KiB", 4 << 10}, {"1MiB", 1 << 20}, {"64MiB", 64 << 20}}
	for _, size := range sizes {
		a, same, changed := benchBuffers(size.n)
		dst := make([]Range, 0, 1024)
		for _, c := range []struct {
			name  string
			other []byte
		}{{"unchanged", same}, {"changed1pct", changed}} {
			x, y := a, c.other
			prefix := size.name + "/" + c.name + "/"
			if c.name == "unchanged" {
				b.Run(prefix+"bytes.Equal", func(b *testing.B) {
					b.SetBytes(int64(size.n))
					for b.Loop() {
						if !bytes.Equal(x, y) {
							b.Fatal("buffers differ")
						}
					}
				})
			}
			b.Run(prefix+"Diff", func(b *testing.B) {
				b.SetBytes(int64(size.n))
				b.ReportAllocs()
				for b.Loop() {
					dst = Diff(x, y, dst[:0])
				}
			})
			for _, k := range impls() {
				b.Run(prefix+k.String(), func(b *testing.B) {
					b.SetBytes(int64(size.n))
					b.ReportAllocs()
					for b.Loop() {
						dst = diff(x, y, dst[:0], k)
					}
				})
			}
			b.Run(prefix+"naive", func(b *testing.B) {
				b.SetBytes(int64(size.n))
				for b.Loop() {
					dst = naiveDiff(x, y, dst[:0])
				}
			})
		}
	}
}
