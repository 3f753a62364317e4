package simd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// TestMain lets TestEnvSwitch run this binary as a child that only prints
// the implementation chosen at init.
func TestMain(m *testing.M) {
	if os.Getenv("COMMY_SIMD_TEST_PRINT_IMPL") == "1" {
		fmt.Print(Impl())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// naiveDiff is the reference Diff: one byte at a time.
func naiveDiff(a, b []byte, dst []Range) []Range {
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		if n := len(dst); n > 0 && dst[n-1].End == i {
			dst[n-1].End++
		} else {
			dst = append(dst, Range{i, i + 1})
		}
	}
	return dst
}

// impls returns every implementation this build and CPU can run.
func impls() []impl {
	var ks []impl
	for k := implGeneric; k <= supported(); k++ {
		ks = append(ks, k)
	}
	return ks
}

// checkDiff compares Diff and every implementation with naiveDiff.
func checkDiff(t *testing.T, a, b []byte) {
	t.Helper()
	want := naiveDiff(a, b, nil)
	if got := Diff(a, b, nil); !slices.Equal(got, want) {
		t.Fatalf("Diff (%s), len %d:\n got %v\nwant %v", Impl(), len(a), got, want)
	}
	for _, k := range impls() {
		if got := diff(a, b, nil, k); !slices.Equal(got, want) {
			t.Fatalf("diff %s, len %d:\n got %v\nwant %v", k, len(a), got, want)
		}
	}
}

// patterns mark which bytes of an n-byte buffer change.
var patterns = []struct {
	name    string
	changed func(i, n int, r *rand.Rand) bool
}{
	{"none", func(i, n int, r *rand.Rand) bool { return false }},
	{"all", func(i, n int, r *rand.Rand) bool { return true }},
	{"first", func(i, n int, r *rand.Rand) bool { return i == 0 }},
	{"last", func(i, n int, r *rand.Rand) bool { return i == n-1 }},
	{"first-and-last", func(i, n int, r *rand.Rand) bool { return i == 0 || i == n-1 }},
	{"all-but-first-and-last", func(i, n int, r *rand.Rand) bool { return i != 0 && i != n-1 }},
	{"middle-run", func(i, n int, r *rand.Rand) bool { return i >= n/3 && i < 2*n/3 }},
	{"alternating-even", func(i, n int, r *rand.Rand) bool { return i%2 == 0 }},
	{"alternating-odd", func(i, n int, r *rand.Rand) bool { return i%2 == 1 }},
	{"two-of-three", func(i, n int, r *rand.Rand) bool { return i%3 != 2 }},
	{"runs-of-31-gap-1", func(i, n int, r *rand.Rand) bool { return i%32 != 31 }},
	{"sparse-random", func(i, n int, r *rand.Rand) bool { return r.IntN(40) == 0 }},
	{"dense-random", func(i, n int, r *rand.Rand) bool { return r.IntN(2) == 0 }},
}

// TestDiffLengthsAlignments checks each implementation against naiveDiff
// for every length 0..300 at every slice offset 0..63, with a and b equally
// and differently misaligned. The bytes around each slice differ between a
// and b, so reading past the slice shows up as a wrong result.
func TestDiffLengthsAlignments(t *testing.T) {
	const maxLen, maxOff = 300, 64
	padA := make([]byte, maxOff+maxLen+maxOff)
	padB := bytes.Repeat([]byte{0xff}, len(padA))
	bufA, bufB := make([]byte, len(padA)), make([]byte, len(padB))
	dst := make([]Range, 0, maxLen)
	for _, p := range patterns {
		t.Run(p.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			for n := 0; n <= maxLen; n++ {
				dataA, dataB := make([]byte, n), make([]byte, n)
				for i := range dataA {
					dataA[i] = byte(r.Uint32())
					dataB[i] = dataA[i]
					if p.changed(i, n, r) {
						dataB[i] ^= byte(1 + r.IntN(255))
					}
				}
				want := naiveDiff(dataA, dataB, nil)
				for offA := range maxOff {
					for _, offB := range []int{offA, (offA*13 + 5) % maxOff} {
						copy(bufA, padA)
						copy(bufB, padB)
						a, b := bufA[offA:offA+n], bufB[offB:offB+n]
						copy(a, dataA)
						copy(b, dataB)
						for _, k := range impls() {
							// The generic kernel has no alignment-dependent
							// code and is slow under -race, so unless it is
							// the active path it runs at offA = 0 only.
							if k == implGeneric && k != active && offA != 0 {
								continue
							}
							if got := diff(a, b, dst[:0], k); !slices.Equal(got, want) {
								t.Fatalf("diff %s, len %d, offsets %d/%d:\n got %v\nwant %v", k, n, offA, offB, got, want)
							}
						}
					}
				}
			}
		})
	}
}

// TestIndexKernels checks that each kernel finds a single difference (or a
// single equal byte) at every position of every length 0..300.
func TestIndexKernels(t *testing.T) {
	const maxLen = 300
	for _, k := range impls() {
		t.Run(k.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			bufA := make([]byte, maxLen+128)
			bufB := make([]byte, len(bufA))
			for n := 0; n <= maxLen; n++ {
				offA, offB := n%64, (n*13+5)%64
				a, b := bufA[offA:offA+n], bufB[offB:offB+n]
				for i := range a {
					a[i] = byte(r.Uint32())
				}
				copy(b, a)
				if got := indexDiff(k, a, b); got != n {
					t.Fatalf("len %d, equal buffers: indexDiff = %d, want %d", n, got, n)
				}
				for p := range n {
					b[p] ^= 0x80
					if got := indexDiff(k, a, b); got != p {
						t.Fatalf("len %d, differs at %d: indexDiff = %d", n, p, got)
					}
					b[p] = a[p]
				}
				for i := range b {
					b[i] = ^a[i]
				}
				if got := indexEqual(k, a, b); got != n {
					t.Fatalf("len %d, all bytes differ: indexEqual = %d, want %d", n, got, n)
				}
				for p := range n {
					b[p] = a[p]
					if got := indexEqual(k, a, b); got != p {
						t.Fatalf("len %d, equal at %d: indexEqual = %d", n, p, got)
					}
					b[p] = ^a[p]
				}
			}
		})
	}
}

func TestDiffTable(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want []Range
	}{
		{"empty", "", "", nil},
		{"equal", "hello", "hello", nil},
		{"one-byte", "a", "b", []Range{{0, 1}}},
		{"first", "xbcdef", "abcdef", []Range{{0, 1}}},
		{"last", "abcdex", "abcdef", []Range{{5, 6}}},
		{"adjacent-bytes-coalesce", "abXYef", "abcdef", []Range{{2, 4}}},
		{"gap-of-one", "aXcYe", "abcde", []Range{{1, 2}, {3, 4}}},
		{"all", "abcd", "wxyz", []Range{{0, 4}}},
		{"alternating", "aXbXcX", "aYbYcY", []Range{{1, 2}, {3, 4}, {5, 6}}},
		{"nul-and-high-bytes", "\x00\x80\x01\xff", "\x00\x00\x01\x7f", []Range{{1, 2}, {3, 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range impls() {
				if got := diff([]byte(tt.a), []byte(tt.b), nil, k); !slices.Equal(got, tt.want) {
					t.Errorf("%s: got %v, want %v", k, got, tt.want)
				}
			}
		})
	}
}

// TestDiffLong checks buffers larger than the unrolled blocks, with ranges
// that straddle block boundaries.
func TestDiffLong(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	a := make([]byte, 1<<16+77)
	for i := range a {
		a[i] = byte(r.Uint32())
	}
	b := slices.Clone(a)
	checkDiff(t, a, b)
	for _, run := range [][2]int{{0, 1}, {127, 129}, {255, 257}, {1000, 1300}, {4095, 4096}, {len(a) - 300, len(a) - 1}, {len(a) - 1, len(a)}} {
		for i := run[0]; i < run[1]; i++ {
			b[i] = ^a[i]
		}
		checkDiff(t, a, b)
	}
	for range 200 {
		b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
	}
	checkDiff(t, a, b)
}

func TestDiffAppends(t *testing.T) {
	dst := []Range{{100, 200}}
	got := Diff([]byte("abc"), []byte("aXc"), dst)
	want := []Range{{100, 200}, {1, 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestDiffLengthMismatchPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Diff with different lengths did not panic")
		}
	}()
	Diff(make([]byte, 3), make([]byte, 4), nil)
}

func TestDiffAllocs(t *testing.T) {
	a := make([]byte, 1<<16)
	b := slices.Clone(a)
	for i := 0; i < len(b); i += 1000 {
		b[i] = 1
	}
	dst := make([]Range, 0, 100)
	for _, k := range impls() {
		if n := testing.AllocsPerRun(100, func() { dst = diff(a, b, dst[:0], k) }); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", k, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { dst = Diff(a, b, dst[:0]) }); n != 0 {
		t.Errorf("Diff: %v allocations per run, want 0", n)
	}
}

func TestChoose(t *testing.T) {
	tests := []struct {
		env  string
		best impl
		want impl
	}{
		{"", implAVX512, implAVX512},
		{"", implAVX2, implAVX2},
		{"", implGeneric, implGeneric},
		{"generic", implAVX512, implGeneric},
		{"generic", implAVX2, implGeneric},
		{"avx2", implAVX512, implAVX2},
		{"avx2", implAVX2, implAVX2},
		{"avx2", implGeneric, implGeneric},
		{"avx512", implAVX2, implAVX2},
		{"unknown", implAVX2, implAVX2},
	}
	for _, tt := range tests {
		t.Run(tt.env+"/"+tt.best.String(), func(t *testing.T) {
			if got := choose(tt.env, tt.best); got != tt.want {
				t.Errorf("choose(%q, %s) = %s, want %s", tt.env, tt.best, got, tt.want)
			}
		})
	}
}

// FuzzDiff checks every implementation against naiveDiff. b is a with mask
// XORed in (repeated to len(a)); off misaligns both slices.
func FuzzDiff(f *testing.F) {
	f.Add([]byte(""), []byte(""), uint8(0))
	f.Add([]byte("hello, world"), []byte("\x00\x01"), uint8(3))
	f.Add(make([]byte, 300), []byte{0xff}, uint8(1))
	f.Add(make([]byte, 257), []byte{0, 0, 1}, uint8(63))
	f.Add(make([]byte, 129), append(make([]byte, 128), 1), uint8(31))
	f.Add(make([]byte, 1000), append(make([]byte, 999), 0x80), uint8(17))
	f.Fuzz(func(t *testing.T, data, mask []byte, off uint8) {
		o := int(off % 64)
		a := make([]byte, o+len(data))[o:]
		b := make([]byte, o+len(data)+1)[o+1:]
		copy(a, data)
		copy(b, data)
		if len(mask) > 0 {
			for i := range b {
				b[i] ^= mask[i%len(mask)]
			}
		}
		checkDiff(t, a, b)
	})
}
