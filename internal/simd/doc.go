// Package simd finds the byte ranges where two equal-length buffers differ.
//
// Diff compares a working copy with its shadow and reports the changed bytes
// as coalesced half-open ranges. On amd64 it uses AVX-512BW or AVX2 assembly
// when the CPU has it, and a portable word-at-a-time loop otherwise, on
// other architectures, and with the purego build tag. The assembly kernels
// produce the ranges themselves, in one call while dst has room; the
// portable loop finds where each range starts and ends.
//
// The implementation is chosen once at init. COMMY_SIMD=generic forces the
// portable loop and COMMY_SIMD=avx2 rules out AVX-512; other values are
// ignored. Impl reports the choice.
//
// The AVX-512 path is kept because it measured about 1.6x faster than AVX2
// on 4 KiB buffers (L1-resident) on a Zen 5 EPYC; on buffers of 1 MiB and
// more both are limited by cache or memory bandwidth and run at the same
// speed. See docs/benchmarks.md.
package simd
