//go:build !amd64 || purego

package simd

// haveAsm reports whether this build has assembly kernels.
const haveAsm = false

func indexDiff(_ impl, a, b []byte) int  { return indexDiffGeneric(a, b) }
func indexEqual(_ impl, a, b []byte) int { return indexEqualGeneric(a, b) }

func diffWhole(_ impl, _, _ []byte, dst []Range) ([]Range, int) { return dst, 0 }
