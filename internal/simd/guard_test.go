//go:build unix

package simd

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDiffGuardPage puts a and b right after and right before pages that
// may not be read, for every length 0..300, so a kernel that reads outside
// its slices crashes the test.
func TestDiffGuardPage(t *testing.T) {
	page := unix.Getpagesize()
	mapGuarded := func() []byte {
		mem, err := unix.Mmap(-1, 0, 3*page, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(mem) })
		if err := unix.Mprotect(mem[page:2*page], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			t.Fatal(err)
		}
		return mem[page : 2*page : 2*page]
	}
	memA, memB := mapGuarded(), mapGuarded()
	for n := 0; n <= 300; n++ {
		for _, at := range []int{0, page - n} { // after the first guard, before the second
			a, b := memA[at:at+n:at+n], memB[at:at+n:at+n]
			for i := range a {
				a[i] = byte(i)
				b[i] = byte(i)
				if i%7 == 3 || i < 2 || i >= n-2 {
					b[i] ^= 0x40
				}
			}
			want := naiveDiff(a, b, nil)
			for _, k := range impls() {
				for _, dst := range [][]Range{nil, make([]Range, 0, n)} {
					if got := diff(a, b, dst, k); !slices.Equal(got, want) {
						t.Fatalf("diff %s, len %d at %d:\n got %v\nwant %v", k, n, at, got, want)
					}
				}
			}
		}
	}
}
