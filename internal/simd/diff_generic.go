package simd

import (
	"encoding/binary"
	"math/bits"
)

// The portable kernels compare eight bytes at a time as little-endian
// words, so the lowest set bit of a word marks its first byte. They are the
// only path on architectures without assembly and the fallback on amd64.

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// zeroBytes returns a word whose lowest set bit is the high bit of the first
// zero byte of x, or 0 if x has no zero byte. Bits above the first zero byte
// may be wrong (borrows propagate upwards); only the lowest one is used.
func zeroBytes(x uint64) uint64 { return (x - lo8) &^ x & hi8 }

// indexDiffGeneric returns the index of the first byte where a and b
// differ, or len(a) if there is none. len(b) must be at least len(a).
func indexDiffGeneric(a, b []byte) int {
	n := len(a)
	b = b[:n]
	i := 0
	for ; n-i >= 32; i += 32 {
		a32, b32 := a[i:i+32:i+32], b[i:i+32:i+32]
		// ^ and | have equal precedence in Go: parenthesise each XOR.
		x := (binary.LittleEndian.Uint64(a32[0:]) ^ binary.LittleEndian.Uint64(b32[0:])) |
			(binary.LittleEndian.Uint64(a32[8:]) ^ binary.LittleEndian.Uint64(b32[8:])) |
			(binary.LittleEndian.Uint64(a32[16:]) ^ binary.LittleEndian.Uint64(b32[16:])) |
			(binary.LittleEndian.Uint64(a32[24:]) ^ binary.LittleEndian.Uint64(b32[24:]))
		if x != 0 {
			break // the word loop finds the byte
		}
	}
	for ; n-i >= 8; i += 8 {
		x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:])
		if x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for ; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// indexEqualGeneric returns the index of the first byte where a and b are
// equal, or len(a) if there is none. len(b) must be at least len(a).
func indexEqualGeneric(a, b []byte) int {
	n := len(a)
	b = b[:n]
	i := 0
	for ; n-i >= 32; i += 32 {
		a32, b32 := a[i:i+32:i+32], b[i:i+32:i+32]
		z := zeroBytes(binary.LittleEndian.Uint64(a32[0:])^binary.LittleEndian.Uint64(b32[0:])) |
			zeroBytes(binary.LittleEndian.Uint64(a32[8:])^binary.LittleEndian.Uint64(b32[8:])) |
			zeroBytes(binary.LittleEndian.Uint64(a32[16:])^binary.LittleEndian.Uint64(b32[16:])) |
			zeroBytes(binary.LittleEndian.Uint64(a32[24:])^binary.LittleEndian.Uint64(b32[24:]))
		if z != 0 {
			break // the word loop finds the byte
		}
	}
	for ; n-i >= 8; i += 8 {
		z := zeroBytes(binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]))
		if z != 0 {
			return i + bits.TrailingZeros64(z)/8
		}
	}
	for ; i < n; i++ {
		if a[i] == b[i] {
			return i
		}
	}
	return n
}
