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
