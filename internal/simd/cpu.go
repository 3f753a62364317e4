package simd

import (
	"os"

	"golang.org/x/sys/cpu"
)

// impl names an implementation of the scan kernels. Faster ones compare
// greater, so a cap is a min.
type impl uint8

const (
	implGeneric impl = iota // portable word-at-a-time Go
	implAVX2                // 4x32-byte AVX2 lanes
	implAVX512              // 4x64-byte AVX-512BW lanes
)

func (k impl) String() string {
	switch k {
	case implAVX2:
		return "avx2"
	case implAVX512:
		return "avx512"
	}
	return "generic"
}

// active is the implementation Diff uses. It is set once at init and only
// read afterwards.
var active = choose(os.Getenv("COMMY_SIMD"), supported())

// supported returns the fastest implementation this build can run on this
// CPU. x/sys/cpu reports AVX2 and AVX-512 only when the OS saves their
// register state.
func supported() impl {
	switch {
	case !haveAsm:
		return implGeneric
	case !cpu.X86.HasBMI1 || !cpu.X86.HasBMI2 || !cpu.X86.HasPOPCNT:
		return implGeneric // every AVX2 CPU has them; a VM may hide them
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW:
		return implAVX512
	case cpu.X86.HasAVX2:
		return implAVX2
	}
	return implGeneric
}

// choose applies the COMMY_SIMD setting env to best: "generic" forces the
// portable loop, "avx2" caps at AVX2; any other value leaves best unchanged.
func choose(env string, best impl) impl {
	switch env {
	case "generic":
		return implGeneric
	case "avx2":
		return min(best, implAVX2)
	}
	return best
}
