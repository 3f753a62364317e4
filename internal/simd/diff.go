package simd

import "strconv"

// Range is a half-open byte range [Start, End).
type Range struct{ Start, End int }

// Diff appends to dst the ranges where a and b differ, in increasing order,
// and returns the extended slice. Ranges are coalesced: adjacent changed
// bytes form one range, so r[i].End < r[i+1].Start. Diff does not allocate
// when dst has room for the result.
//
// Diff panics if len(a) != len(b). It only reads a and b and is safe for
// concurrent use with other readers. If another process writes a or b
// during the call, the ranges are still ordered and coalesced, but bytes
// written meanwhile may or may not be reported.
func Diff(a, b []byte, dst []Range) []Range {
	if len(a) != len(b) {
		panic("simd: Diff: len(a) = " + strconv.Itoa(len(a)) +
			" but len(b) = " + strconv.Itoa(len(b)))
	}
	return diff(a, b, dst, active)
}

// Impl reports which implementation Diff uses: "avx512", "avx2" or
// "generic". It is fixed at init and safe for concurrent use.
func Impl() string { return active.String() }

// shortRun is how many changed bytes diff checks one at a time before it
// calls a kernel to find the end of a range.
const shortRun = 8

// diff is Diff with the implementation k chosen by the caller, so that tests
// can run every implementation the CPU supports. len(b) must equal len(a).
func diff(a, b []byte, dst []Range, k impl) []Range {
	dst, i := diffWhole(k, a, b, dst)
	n := len(a)
	b = b[:n]
	for i < n {
		start := i + indexDiff(k, a[i:], b[i:])
		if start == n {
			break
		}
		// a[start] != b[start]. Most changed runs are short, so look at a
		// few bytes here before calling the kernel.
		end := start + 1
		for end < n && end-start < shortRun && a[end] != b[end] {
			end++
		}
		if end < n && a[end] != b[end] {
			end += indexEqual(k, a[end:], b[end:])
		}
		dst = append(dst, Range{start, end})
		// a[end] == b[end] (or end == n): the next range starts after it.
		i = end + 1
	}
	return dst
}
