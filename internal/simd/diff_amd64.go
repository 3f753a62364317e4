//go:build amd64 && !purego

package simd

// haveAsm reports whether this build has assembly kernels.
const haveAsm = true

// indexDiff returns the index of the first byte where a and b differ, or
// len(a) if there is none, using kernel k. len(b) must be at least len(a).
func indexDiff(k impl, a, b []byte) int {
	switch k {
	case implAVX512:
		return indexDiffAVX512(a, b)
	case implAVX2:
		return indexDiffAVX2(a, b)
	}
	return indexDiffGeneric(a, b)
}

// indexEqual returns the index of the first byte where a and b are equal,
// or len(a) if there is none, using kernel k. len(b) must be at least len(a).
func indexEqual(k impl, a, b []byte) int {
	switch k {
	case implAVX512:
		return indexEqualAVX512(a, b)
	case implAVX2:
		return indexEqualAVX2(a, b)
	}
	return indexEqualGeneric(a, b)
}

// diffWhole appends the ranges of a prefix of a and b with a ranges
// kernel, which finds them all in one call while dst has room, and returns
// the prefix's length: where diff goes on with the index kernels. A range
// never straddles the prefix's end.
func diffWhole(k impl, a, b []byte, dst []Range) ([]Range, int) {
	b = b[:len(a)]
	for off := 0; ; {
		var n, stop int
		switch {
		case k == implAVX512:
			n, stop = rangesAVX512(a[off:], b[off:], dst[len(dst):cap(dst)], off)
		case k == implAVX2 && len(a)-off >= 64:
			n, stop = rangesAVX2(a[off:], b[off:], dst[len(dst):cap(dst)], off)
		default:
			return dst, off
		}
		dst = dst[:len(dst)+n]
		if off += stop; off == len(a) {
			return dst, off
		}
		dst = append(dst, Range{})[:len(dst)] // full: grow as append does
	}
}

// The assembly kernels in diff_amd64.s read len(a) bytes of a and b. The
// AVX2 ones need AVX2; the AVX-512 ones need AVX-512F and AVX-512BW.

//go:noescape
func indexDiffAVX2(a, b []byte) int

//go:noescape
func indexEqualAVX2(a, b []byte) int

//go:noescape
func indexDiffAVX512(a, b []byte) int

//go:noescape
func indexEqualAVX512(a, b []byte) int

// rangesAVX512 writes the ranges where a and b differ, shifted by off, to
// dst[:cap(dst)] and returns how many. When dst is full it stops before the
// range that does not fit and returns its first byte as stop; otherwise stop
// is len(a). It needs AVX-512F, AVX-512BW, BMI1, BMI2 and POPCNT.
//
//go:noescape
func rangesAVX512(a, b []byte, dst []Range, off int) (n, stop int)

// rangesAVX2 is rangesAVX512 for AVX2, BMI1, BMI2 and POPCNT. len(a) must be
// at least 64.
//
//go:noescape
func rangesAVX2(a, b []byte, dst []Range, off int) (n, stop int)
