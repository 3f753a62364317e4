//go:build amd64 && !purego

#include "textflag.h"

// Each kernel returns the offset of the first byte where a and b differ
// (indexDiff*) or are equal (indexEqual*), or len(a) if there is none.
// Register use: SI = &a[0], DI = &b[0], BX = len(a), AX = offset being
// compared, DX = last offset of the current loop, CX = byte mask.
//
// Buffers of at least one block (4 lanes) are compared block by block from
// the first lane boundary of a (after comparing one unaligned lane if a is
// not aligned), so loads from a, and from b when it has a's alignment,
// never straddle cache lines. Each block costs one branch. The bytes left
// at the end, and buffers shorter than a block, are compared by rereading
// the last whole block or lane. That window overlaps bytes already known
// not to match, so the first match in it is still the first match overall.

// SKIP_TO_ALIGNED(n, label) jumps to label, with AX = 0, if a is n-byte
// aligned. Otherwise the code after it compares bytes [0, n) and then
// runs ALIGN_A(n).
#define SKIP_TO_ALIGNED(n, label) \
	TESTQ $(n-1), SI \
	JZ    label

// ALIGN_A(n) sets AX to the offset of a's first n-byte boundary, in
// [1, n) when a is not n-byte aligned.
#define ALIGN_A(n) \
	MOVQ SI, AX     \
	ANDQ $(n-1), AX \
	NEGQ AX         \
	ADDQ $n, AX

// func indexDiffAVX2(a, b []byte) int
// Requires: AVX2
// XOR256_AVX512 sets Z0-Z3 to a^b for the 256 bytes at AX, and the flags
// so that JNZ jumps if any of them differ (K1 marks those of Z0|..|Z3).
#define XOR256_AVX512 \
	VMOVDQU64  (SI)(AX*1), Z0        \
	VMOVDQU64  64(SI)(AX*1), Z1      \
	VMOVDQU64  128(SI)(AX*1), Z2     \
	VMOVDQU64  192(SI)(AX*1), Z3     \
	VPXORQ     (DI)(AX*1), Z0, Z0    \
	VPXORQ     64(DI)(AX*1), Z1, Z1  \
	VPXORQ     128(DI)(AX*1), Z2, Z2 \
	VPXORQ     192(DI)(AX*1), Z3, Z3 \
	VPORQ      Z0, Z1, Z4            \
	VPTERNLOGQ $0xfe, Z2, Z3, Z4     \
	VPTESTMB   Z4, Z4, K1            \
	KORTESTQ   K1, K1

// EQ128_AVX2 sets Y0-Y3 to the byte equality of the 128 bytes at AX, and
// the flags so that JNE jumps if any of them differ.
#define EQ128_AVX2 \
	VMOVDQU   (SI)(AX*1), Y0       \
	VMOVDQU   32(SI)(AX*1), Y1     \
	VMOVDQU   64(SI)(AX*1), Y2     \
	VMOVDQU   96(SI)(AX*1), Y3     \
	VPCMPEQB  (DI)(AX*1), Y0, Y0   \
	VPCMPEQB  32(DI)(AX*1), Y1, Y1 \
	VPCMPEQB  64(DI)(AX*1), Y2, Y2 \
	VPCMPEQB  96(DI)(AX*1), Y3, Y3 \
	VPAND     Y0, Y1, Y4           \
	VPAND     Y2, Y3, Y5           \
	VPAND     Y4, Y5, Y5           \
	VPMOVMSKB Y5, CX               \
	CMPL      CX, $0xffffffff

TEXT ·indexDiffAVX2(SB), NOSPLIT, $0-56
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), BX
	MOVQ b_base+24(FP), DI
	XORL AX, AX
	CMPQ BX, $32
	JB   diff2_small
	CMPQ BX, $128
	JB   diff2_lanes

	SKIP_TO_ALIGNED(32, diff2_aligned)
	VMOVDQU   (SI), Y0
	VPCMPEQB  (DI), Y0, Y0
	VPMOVMSKB Y0, CX
	XORL      $0xffffffff, CX // set bits mark differing bytes
	JNZ       diff2_found
	ALIGN_A(32)

diff2_aligned:
	LEAQ      -128(BX), DX    // last offset where a block fits
	CMPQ      AX, DX
	JGT       diff2_last_block

	PCALIGN $32

diff2_blocks:
	EQ128_AVX2
	JNE       diff2_block_found
	ADDQ      $128, AX
	CMPQ      AX, DX
	JLE       diff2_blocks

diff2_last_block:
	CMPQ AX, BX
	JGE  diff2_none
	MOVQ DX, AX           // overlapping last block; the loop then ends
	JMP  diff2_blocks

diff2_block_found:
	VPMOVMSKB Y0, CX
	XORL      $0xffffffff, CX
	JNZ       diff2_found
	ADDQ      $32, AX
	VPMOVMSKB Y1, CX
	XORL      $0xffffffff, CX
	JNZ       diff2_found
	ADDQ      $32, AX
	VPMOVMSKB Y2, CX
	XORL      $0xffffffff, CX
	JNZ       diff2_found
	ADDQ      $32, AX
	VPMOVMSKB Y3, CX
	XORL      $0xffffffff, CX

diff2_found:
	BSFL       CX, CX
	ADDQ       CX, AX
	VZEROUPPER
	MOVQ       AX, ret+48(FP)
	RET

diff2_none:
	VZEROUPPER
	MOVQ BX, ret+48(FP)
	RET

diff2_lanes:
	// 32 <= len < 128.
	LEAQ -32(BX), DX

diff2_lanes_loop:
	VMOVDQU   (SI)(AX*1), Y0
	VPCMPEQB  (DI)(AX*1), Y0, Y0
	VPMOVMSKB Y0, CX
	XORL      $0xffffffff, CX
	JNZ       diff2_found
	ADDQ      $32, AX
	CMPQ      AX, DX
	JLE       diff2_lanes_loop
	CMPQ      AX, BX
	JGE       diff2_none
	MOVQ      DX, AX           // overlapping last lane
	JMP       diff2_lanes_loop

diff2_small:
	// len < 32: two overlapping 16-byte lanes, two overlapping words, or
	// bytes.
	CMPQ      BX, $16
	JB        diff2_small8
	VMOVDQU   (SI), X0
	VPCMPEQB  (DI), X0, X0
	VPMOVMSKB X0, CX
	XORL      $0xffff, CX
	JNZ       diff2_found
	LEAQ      -16(BX), AX
	VMOVDQU   (SI)(AX*1), X0
	VPCMPEQB  (DI)(AX*1), X0, X0
	VPMOVMSKB X0, CX
	XORL      $0xffff, CX
	JNZ       diff2_found
	JMP       diff2_none

diff2_small8:
	CMPQ BX, $8
	JB   diff2_bytes
	MOVQ (SI), CX
	XORQ (DI), CX
	JNZ  diff2_word
	LEAQ -8(BX), AX
	MOVQ (SI)(AX*1), CX
	XORQ (DI)(AX*1), CX
	JNZ  diff2_word
	MOVQ BX, ret+48(FP)
	RET

diff2_word:
	// Little endian: the lowest set bit is in the first differing byte.
	BSFQ CX, CX
	SHRQ $3, CX
	ADDQ CX, AX
	MOVQ AX, ret+48(FP)
	RET

diff2_bytes:
	CMPQ    AX, BX
	JAE     diff2_bytes_done
	MOVBLZX (SI)(AX*1), CX
	CMPB    CL, (DI)(AX*1)
	JNE     diff2_bytes_done
	INCQ    AX
	JMP     diff2_bytes

diff2_bytes_done:
	MOVQ AX, ret+48(FP)
	RET

// func indexEqualAVX2(a, b []byte) int
// Requires: AVX2
TEXT ·indexEqualAVX2(SB), NOSPLIT, $0-56
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), BX
	MOVQ b_base+24(FP), DI
	XORL AX, AX
	CMPQ BX, $32
	JB   eq2_small
	CMPQ BX, $128
	JB   eq2_lanes

	SKIP_TO_ALIGNED(32, eq2_aligned)
	VMOVDQU   (SI), Y0
	VPCMPEQB  (DI), Y0, Y0
	VPMOVMSKB Y0, CX          // set bits mark equal bytes
	TESTL     CX, CX
	JNZ       eq2_found
	ALIGN_A(32)

eq2_aligned:
	LEAQ      -128(BX), DX
	CMPQ      AX, DX
	JGT       eq2_last_block

	PCALIGN $32

eq2_blocks:
	VMOVDQU   (SI)(AX*1), Y0
	VMOVDQU   32(SI)(AX*1), Y1
	VMOVDQU   64(SI)(AX*1), Y2
	VMOVDQU   96(SI)(AX*1), Y3
	VPCMPEQB  (DI)(AX*1), Y0, Y0
	VPCMPEQB  32(DI)(AX*1), Y1, Y1
	VPCMPEQB  64(DI)(AX*1), Y2, Y2
	VPCMPEQB  96(DI)(AX*1), Y3, Y3
	VPOR      Y0, Y1, Y4
	VPOR      Y2, Y3, Y5
	VPOR      Y4, Y5, Y5
	VPMOVMSKB Y5, CX
	TESTL     CX, CX
	JNZ       eq2_block_found
	ADDQ      $128, AX
	CMPQ      AX, DX
	JLE       eq2_blocks

eq2_last_block:
	CMPQ AX, BX
	JGE  eq2_none
	MOVQ DX, AX
	JMP  eq2_blocks

eq2_block_found:
	VPMOVMSKB Y0, CX
	TESTL     CX, CX
	JNZ       eq2_found
	ADDQ      $32, AX
	VPMOVMSKB Y1, CX
	TESTL     CX, CX
	JNZ       eq2_found
	ADDQ      $32, AX
	VPMOVMSKB Y2, CX
	TESTL     CX, CX
	JNZ       eq2_found
	ADDQ      $32, AX
	VPMOVMSKB Y3, CX

eq2_found:
	BSFL       CX, CX
	ADDQ       CX, AX
	VZEROUPPER
	MOVQ       AX, ret+48(FP)
	RET

eq2_none:
	VZEROUPPER
	MOVQ BX, ret+48(FP)
	RET

eq2_lanes:
	LEAQ -32(BX), DX

eq2_lanes_loop:
	VMOVDQU   (SI)(AX*1), Y0
	VPCMPEQB  (DI)(AX*1), Y0, Y0
	VPMOVMSKB Y0, CX
	TESTL     CX, CX
	JNZ       eq2_found
	ADDQ      $32, AX
	CMPQ      AX, DX
	JLE       eq2_lanes_loop
	CMPQ      AX, BX
	JGE       eq2_none
	MOVQ      DX, AX
	JMP       eq2_lanes_loop

eq2_small:
	CMPQ      BX, $16
	JB        eq2_small8
	VMOVDQU   (SI), X0
	VPCMPEQB  (DI), X0, X0
	VPMOVMSKB X0, CX
	TESTL     CX, CX
	JNZ       eq2_found
	LEAQ      -16(BX), AX
	VMOVDQU   (SI)(AX*1), X0
	VPCMPEQB  (DI)(AX*1), X0, X0
	VPMOVMSKB X0, CX
	TESTL     CX, CX
	JNZ       eq2_found
	JMP       eq2_none

eq2_small8:
	// Equal bytes are zero bytes of x = a^b; (x-0x01..01) &^ x & 0x80..80
	// has its lowest set bit in the first one.
	CMPQ BX, $8
	JB   eq2_bytes
	MOVQ $0x0101010101010101, R8
	MOVQ $0x8080808080808080, R9
	MOVQ (SI), CX
	XORQ (DI), CX
	MOVQ CX, DX
	SUBQ R8, DX
	NOTQ CX
	ANDQ DX, CX
	ANDQ R9, CX
	JNZ  eq2_word
	LEAQ -8(BX), AX
	MOVQ (SI)(AX*1), CX
	XORQ (DI)(AX*1), CX
	MOVQ CX, DX
	SUBQ R8, DX
	NOTQ CX
	ANDQ DX, CX
	ANDQ R9, CX
	JNZ  eq2_word
	MOVQ BX, ret+48(FP)
	RET

eq2_word:
	BSFQ CX, CX
	SHRQ $3, CX
	ADDQ CX, AX
	MOVQ AX, ret+48(FP)
	RET

eq2_bytes:
	CMPQ    AX, BX
	JAE     eq2_bytes_done
	MOVBLZX (SI)(AX*1), CX
	CMPB    CL, (DI)(AX*1)
	JEQ     eq2_bytes_done
	INCQ    AX
	JMP     eq2_bytes

eq2_bytes_done:
	MOVQ AX, ret+48(FP)
	RET

// func indexDiffAVX512(a, b []byte) int
// Requires: AVX512F, AVX512BW
TEXT ·indexDiffAVX512(SB), NOSPLIT, $0-56
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), BX
	MOVQ b_base+24(FP), DI
	XORL AX, AX
	CMPQ BX, $64
	JB   diff5_masked
	CMPQ BX, $256
	JB   diff5_lanes

	SKIP_TO_ALIGNED(64, diff5_aligned)
	VMOVDQU64 (SI), Z0
	VPXORQ    (DI), Z0, Z0
	VPTESTMB  Z0, Z0, K1 // K1 marks nonzero bytes of a^b: differences
	KMOVQ     K1, CX
	TESTQ     CX, CX
	JNZ       diff5_found
	ALIGN_A(64)

diff5_aligned:
	LEAQ      -256(BX), DX
	CMPQ      AX, DX
	JGT       diff5_last_block

	PCALIGN $32

diff5_blocks:
	XOR256_AVX512
	JNZ        diff5_block_found
	ADDQ       $256, AX
	CMPQ       AX, DX
	JLE        diff5_blocks

diff5_last_block:
	CMPQ AX, BX
	JGE  diff5_none
	MOVQ DX, AX
	JMP  diff5_blocks

diff5_block_found:
	VPTESTMB Z0, Z0, K1
	KMOVQ    K1, CX
	TESTQ    CX, CX
	JNZ      diff5_found
	ADDQ     $64, AX
	VPTESTMB Z1, Z1, K1
	KMOVQ    K1, CX
	TESTQ    CX, CX
	JNZ      diff5_found
	ADDQ     $64, AX
	VPTESTMB Z2, Z2, K1
	KMOVQ    K1, CX
	TESTQ    CX, CX
	JNZ      diff5_found
	ADDQ     $64, AX
	VPTESTMB Z3, Z3, K1
	KMOVQ    K1, CX

diff5_found:
	BSFQ       CX, CX
	ADDQ       CX, AX
	VZEROUPPER
	MOVQ       AX, ret+48(FP)
	RET

diff5_none:
	VZEROUPPER
	MOVQ BX, ret+48(FP)
	RET

diff5_lanes:
	// 64 <= len < 256.
	LEAQ -64(BX), DX

diff5_lanes_loop:
	VMOVDQU64 (SI)(AX*1), Z0
	VPXORQ    (DI)(AX*1), Z0, Z0
	VPTESTMB  Z0, Z0, K1
	KMOVQ     K1, CX
	TESTQ     CX, CX
	JNZ       diff5_found
	ADDQ      $64, AX
	CMPQ      AX, DX
	JLE       diff5_lanes_loop
	CMPQ      AX, BX
	JGE       diff5_none
	MOVQ      DX, AX
	JMP       diff5_lanes_loop

diff5_masked:
	// len < 64: load only the first len bytes. Masked-off bytes are not
	// read and are zero in both.
	MOVQ       BX, CX
	MOVQ       $-1, DX
	SHLQ       CX, DX
	NOTQ       DX
	KMOVQ      DX, K2
	VMOVDQU8.Z (SI), K2, Z0
	VMOVDQU8.Z (DI), K2, Z1
	VPXORQ     Z1, Z0, Z0
	VPTESTMB   Z0, Z0, K1
	KMOVQ      K1, CX
	TESTQ      CX, CX
	JNZ        diff5_found
	JMP        diff5_none

// func indexEqualAVX512(a, b []byte) int
// Requires: AVX512F, AVX512BW
TEXT ·indexEqualAVX512(SB), NOSPLIT, $0-56
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), BX
	MOVQ b_base+24(FP), DI
	XORL AX, AX
	CMPQ BX, $64
	JB   eq5_masked
	CMPQ BX, $256
	JB   eq5_lanes

	SKIP_TO_ALIGNED(64, eq5_aligned)
	VMOVDQU64 (SI), Z0
	VPXORQ    (DI), Z0, Z0
	VPTESTNMB Z0, Z0, K1 // K1 marks zero bytes of a^b: equal bytes
	KMOVQ     K1, CX
	TESTQ     CX, CX
	JNZ       eq5_found
	ALIGN_A(64)

eq5_aligned:
	LEAQ      -256(BX), DX
	CMPQ      AX, DX
	JGT       eq5_last_block

	PCALIGN $32

eq5_blocks:
	VMOVDQU64 (SI)(AX*1), Z0
	VMOVDQU64 64(SI)(AX*1), Z1
	VMOVDQU64 128(SI)(AX*1), Z2
	VMOVDQU64 192(SI)(AX*1), Z3
	VPXORQ    (DI)(AX*1), Z0, Z0
	VPXORQ    64(DI)(AX*1), Z1, Z1
	VPXORQ    128(DI)(AX*1), Z2, Z2
	VPXORQ    192(DI)(AX*1), Z3, Z3
	VPMINUB   Z0, Z1, Z4
	VPMINUB   Z2, Z3, Z5
	VPMINUB   Z4, Z5, Z5        // a zero byte survives the minimum
	VPTESTNMB Z5, Z5, K1
	KORTESTQ  K1, K1
	JNZ       eq5_block_found
	ADDQ      $256, AX
	CMPQ      AX, DX
	JLE       eq5_blocks

eq5_last_block:
	CMPQ AX, BX
	JGE  eq5_none
	MOVQ DX, AX
	JMP  eq5_blocks

eq5_block_found:
	VPTESTNMB Z0, Z0, K1
	KMOVQ     K1, CX
	TESTQ     CX, CX
	JNZ       eq5_found
	ADDQ      $64, AX
	VPTESTNMB Z1, Z1, K1
	KMOVQ     K1, CX
	TESTQ     CX, CX
	JNZ       eq5_found
	ADDQ      $64, AX
	VPTESTNMB Z2, Z2, K1
	KMOVQ     K1, CX
	TESTQ     CX, CX
	JNZ       eq5_found
	ADDQ      $64, AX
	VPTESTNMB Z3, Z3, K1
	KMOVQ     K1, CX

eq5_found:
	BSFQ       CX, CX
	ADDQ       CX, AX
	VZEROUPPER
	MOVQ       AX, ret+48(FP)
	RET

eq5_none:
	VZEROUPPER
	MOVQ BX, ret+48(FP)
	RET

eq5_lanes:
	LEAQ -64(BX), DX

eq5_lanes_loop:
	VMOVDQU64 (SI)(AX*1), Z0
	VPXORQ    (DI)(AX*1), Z0, Z0
	VPTESTNMB Z0, Z0, K1
	KMOVQ     K1, CX
	TESTQ     CX, CX
	JNZ       eq5_found
	ADDQ      $64, AX
	CMPQ      AX, DX
	JLE       eq5_lanes_loop
	CMPQ      AX, BX
	JGE       eq5_none
	MOVQ      DX, AX
	JMP       eq5_lanes_loop

eq5_masked:
	// len < 64: masked-off bytes would look equal, so the test is masked
	// too.
	MOVQ       BX, CX
	MOVQ       $-1, DX
	SHLQ       CX, DX
	NOTQ       DX
	KMOVQ      DX, K2
	VMOVDQU8.Z (SI), K2, Z0
	VMOVDQU8.Z (DI), K2, Z1
	VPXORQ     Z1, Z0, Z0
	VPTESTNMB  Z0, Z0, K2, K1
	KMOVQ      K1, CX
	TESTQ      CX, CX
	JNZ        eq5_found
	JMP        eq5_none

// The ranges kernels (rangesAVX512, rangesAVX2) are Diff in one call: each
// writes the ranges where a and b differ, shifted by off, to
// dst[0:cap(dst)] and returns how many it wrote. It stops early, before a
// range that would not fit, and returns the offset of that range's first
// byte as stop; otherwise stop is len(a).
//
// They walk a in 64-byte chunks aligned on a, with a partial chunk at
// either end. While no range is open, runs of whole chunks are tested with
// one branch. A chunk's difference mask is turned into ranges with scalar
// bit operations (RANGES_CHUNK), so a changed range costs a few
// instructions, not a return to Go.
//
// Registers: SI = &a[0], DI = &b[0], BX = len(a), AX = offset of the current
// chunk, R8 = start of the open range or -1, R9 = next Range in dst, R10 =
// end of dst's capacity, R12 = off, CX = mask of the bytes of the chunk that
// differ, R13 = mask of the chunk's bytes (64 ones, or fewer for a partial
// chunk), DX and R11 scratch.

// RANGES_CHUNK writes the ranges that close in the chunk at AX, opens the
// one that runs on past it, and goes on to loop with AX at the next chunk.
// It jumps to ret with AX = stop when dst is full.
#define RANGES_CHUNK(closed, open, next, full, loop, ret) \
	TESTQ   R8, R8          \
	JNS     open            \
closed:                     \
	TESTQ   CX, CX          \
	JZ      next            \
	CMPQ    R9, R10         \
	JAE     full            \
	TZCNTQ  CX, DX          \
	LEAQ    (AX)(DX*1), R8  \
	BLSMSKQ CX, DX          \
	ORQ     DX, CX          \
open:                       \
	ANDNQ   R13, CX, DX     \
	TESTQ   DX, DX          \
	JZ      next            \
	TZCNTQ  DX, DX          \
	LEAQ    (AX)(DX*1), R11 \
	ADDQ    R12, R11        \
	ADDQ    R12, R8         \
	MOVQ    R8, (R9)        \
	MOVQ    R11, 8(R9)      \
	ADDQ    $16, R9         \
	MOVQ    $-1, R8         \
	LEAQ    1(CX), DX       \
	ANDQ    DX, CX          \
	JMP     closed          \
next:                       \
	POPCNTQ R13, DX         \
	ADDQ    DX, AX          \
	JMP     loop            \
full:                       \
	TZCNTQ  CX, DX          \
	ADDQ    DX, AX          \
	JMP     ret

// In RANGES_CHUNK: a range opens at the chunk's first differing byte
// (TZCNT), and BLSMSK then sets the bits below it, so that the range's
// bytes are the trailing ones of CX and the first equal byte after them
// (ANDN with R13, TZCNT) closes it. CX & (CX+1) clears those trailing ones
// before the next range in the chunk. Ranges still open at the end of a
// chunk go on into the next one.

// RANGES_END closes a range still open at the end of a.
#define RANGES_END(done) \
	TESTQ R8, R8           \
	JS    done             \
	ADDQ  R12, R8          \
	MOVQ  R8, (R9)         \
	LEAQ  (BX)(R12*1), R11 \
	MOVQ  R11, 8(R9)       \
	ADDQ  $16, R9

// func rangesAVX512(a, b []byte, dst []Range, off int) (n, stop int)
// Requires: AVX512F, AVX512BW, BMI1, BMI2, POPCNT
//
// Partial chunks are read with masked loads, which touch no byte past
// them, so a may be of any length.
TEXT ·rangesAVX512(SB), NOSPLIT, $0-96
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), BX
	MOVQ b_base+24(FP), DI
	MOVQ dst_base+48(FP), R9
	MOVQ dst_cap+64(FP), R10
	SHLQ $4, R10
	ADDQ R9, R10 // end of dst's capacity
	MOVQ off+72(FP), R12
	XORQ AX, AX
	MOVQ $-1, R8 // no open range

ranges5_loop:
	MOVQ BX, DX
	SUBQ AX, DX // DX = bytes left
	JZ   ranges5_finish
	LEAQ (SI)(AX*1), R11
	ANDQ $63, R11
	JNZ  ranges5_partial
	CMPQ DX, $64
	JB   ranges5_partial
	TESTQ R8, R8
	JNS  ranges5_single // an open range is followed chunk by chunk
	CMPQ DX, $256
	JB   ranges5_single
	LEAQ -256(BX), R11

	PCALIGN $32

ranges5_quad:
	XOR256_AVX512
	JNZ        ranges5_single
	ADDQ       $256, AX
	CMPQ       AX, R11
	JLE        ranges5_quad
	JMP        ranges5_loop

ranges5_single:
	VMOVDQU64 (SI)(AX*1), Z0
	VPXORQ    (DI)(AX*1), Z0, Z0
	VPTESTMB  Z0, Z0, K1 // K1 marks nonzero bytes of a^b: differences
	KMOVQ     K1, CX
	MOVQ      $-1, R13
	JMP       ranges5_chunk

ranges5_partial:
	// R13 = min(bytes left, bytes to a's next 64-byte boundary).
	MOVQ       $64, R13
	SUBQ       R11, R13
	CMPQ       DX, R13
	CMOVQLT    DX, R13
	MOVQ       $-1, R11
	BZHIQ      R13, R11, R13 // R13 = one bit per byte of the chunk
	KMOVQ      R13, K2
	VMOVDQU8.Z (SI)(AX*1), K2, Z0
	VMOVDQU8.Z (DI)(AX*1), K2, Z1
	VPXORQ     Z1, Z0, Z0
	VPTESTMB   Z0, Z0, K1
	KMOVQ      K1, CX

ranges5_chunk:
	RANGES_CHUNK(ranges5_closed, ranges5_open, ranges5_next, ranges5_full, ranges5_loop, ranges5_return)

ranges5_finish:
	RANGES_END(ranges5_return)

ranges5_return:
	SUBQ       dst_base+48(FP), R9
	SHRQ       $4, R9
	MOVQ       R9, n+80(FP)
	MOVQ       AX, stop+88(FP)
	VZEROUPPER
	RET

// DIFF64_AVX2(off) sets CX to the mask of the bytes that differ in the 64
// bytes at offset off of a and b. It clobbers DX.
#define DIFF64_AVX2(off) \
	VMOVDQU   (SI)(off*1), Y0       \
	VMOVDQU   32(SI)(off*1), Y1     \
	VPCMPEQB  (DI)(off*1), Y0, Y0   \
	VPCMPEQB  32(DI)(off*1), Y1, Y1 \
	VPMOVMSKB Y0, CX                \
	VPMOVMSKB Y1, DX                \
	SHLQ      $32, DX               \
	ORQ       DX, CX                \
	NOTQ      CX

// func rangesAVX2(a, b []byte, dst []Range, off int) (n, stop int)
// Requires: AVX2, BMI1, BMI2, POPCNT
//
// len(a) must be at least 64: a partial chunk is read as the whole 64 bytes
// that start (head) or end (tail) with it, and the mask shifted and cut to it.
TEXT ·rangesAVX2(SB), NOSPLIT, $0-96
	MOVQ a_base+0(FP), SI
	MOVQ a_len+8(FP), BX
	MOVQ b_base+24(FP), DI
	MOVQ dst_base+48(FP), R9
	MOVQ dst_cap+64(FP), R10
	SHLQ $4, R10
	ADDQ R9, R10 // end of dst's capacity
	MOVQ off+72(FP), R12
	XORQ AX, AX
	MOVQ $-1, R8 // no open range

ranges2_loop:
	MOVQ BX, DX
	SUBQ AX, DX // DX = bytes left
	JZ   ranges2_finish
	CMPQ DX, $64
	JB   ranges2_tail
	LEAQ (SI)(AX*1), R11
	ANDQ $63, R11
	JNZ  ranges2_head
	TESTQ R8, R8
	JNS  ranges2_single // an open range is followed chunk by chunk
	CMPQ DX, $128
	JB   ranges2_single
	LEAQ -128(BX), R11

	PCALIGN $32

ranges2_pair:
	EQ128_AVX2
	JNE       ranges2_single
	ADDQ      $128, AX
	CMPQ      AX, R11
	JLE       ranges2_pair
	JMP       ranges2_loop

ranges2_single:
	DIFF64_AVX2(AX)
	MOVQ $-1, R13
	JMP  ranges2_chunk

ranges2_head:
	// The chunk runs to a's next 64-byte boundary: R13 = 64 - R11 bytes.
	MOVQ  $64, R13
	SUBQ  R11, R13
	DIFF64_AVX2(AX)
	MOVQ  $-1, DX
	BZHIQ R13, DX, R13
	ANDQ  R13, CX
	JMP   ranges2_chunk

ranges2_tail:
	// DX bytes are left, fewer than 64: read the last 64 bytes of a and
	// shift the mask down to the bytes from AX on.
	LEAQ  -64(BX), R11
	DIFF64_AVX2(R11)
	MOVQ  BX, DX
	SUBQ  AX, DX
	MOVQ  $64, R11
	SUBQ  DX, R11
	SHRXQ R11, CX, CX
	MOVQ  $-1, R11
	BZHIQ DX, R11, R13

ranges2_chunk:
	RANGES_CHUNK(ranges2_closed, ranges2_open, ranges2_next, ranges2_full, ranges2_loop, ranges2_return)

ranges2_finish:
	RANGES_END(ranges2_return)

ranges2_return:
	SUBQ       dst_base+48(FP), R9
	SHRQ       $4, R9
	MOVQ       R9, n+80(FP)
	MOVQ       AX, stop+88(FP)
	VZEROUPPER
	RET
