package shm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// selfCheck is a value that proves itself: write number i, its length n and
// a pattern derived from both. Any tear, or mix of two writes, breaks one of
// them whatever the lengths.
func selfCheck(dst []byte, i uint64, n int) []byte {
	dst = dst[:n]
	le.PutUint64(dst[0:], i)
	le.PutUint64(dst[8:], uint64(n))
	for j := 16; j < n; j++ {
		dst[j] = byte(i*131 + uint64(n)*7 + uint64(j))
	}
	return dst
}

// checkSelf returns the write number a value proves, or an error.
func checkSelf(b []byte) (uint64, error) {
	if len(b) < 16 {
		return 0, fmt.Errorf("%d bytes", len(b))
	}
	i, n := le.Uint64(b[0:]), le.Uint64(b[8:])
	if n != uint64(len(b)) {
		return i, fmt.Errorf("write %d: length field %d, read %d bytes", i, n, len(b))
	}
	for j := 16; j < len(b); j++ {
		if b[j] != byte(i*131+n*7+uint64(j)) {
			return i, fmt.Errorf("write %d (%d bytes): byte %d torn", i, n, j)
		}
	}
	return i, nil
}

// TestSeqlockNoTornReads hammers one variable with self-checking values whose
// length ramps from 16 B to 256 KiB, so the value keeps moving to bigger
// slots, while new variables push the data end so that those slots land in
// pages the file has just grown by; each round starts from a fresh file, so
// the file grows many times. Readers on mappings check every copy is whole,
// that its version is the one its contents say (write i is version i+1) and
// that versions never go back, and count every error.
func TestSeqlockNoTornReads(t *testing.T) {
	const rounds, writes = 4, 300
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			var reads, bad atomic.Int64
			grows := 0
			for round := 0; round < rounds; round++ {
				f := be.create(t, Options{MaxSize: 256 << 20})
				if _, err := f.Allocate("hot", selfCheck(make([]byte, 16), 0, 16), 0); err != nil {
					t.Fatal(err)
				}
				var stop atomic.Bool
				var wg sync.WaitGroup
				for r := 0; r < 2; r++ {
					m := mapFile(t, f)
					wg.Add(1)
					go func() {
						defer wg.Done()
						buf := make([]byte, 0, 256<<10)
						var last uint64
						for !stop.Load() {
							b, v, err := m.Read("hot", buf)
							buf = b[:0]
							reads.Add(1)
							if err != nil {
								if bad.Add(1) < 5 {
									t.Errorf("read: %v", err)
								}
								continue
							}
							i, err := checkSelf(b)
							switch {
							case err != nil:
								err = fmt.Errorf("torn: %w", err)
							case v != i+1:
								err = fmt.Errorf("version %d holds write %d", v, i)
							case v < last:
								err = fmt.Errorf("version went back: %d after %d", v, last)
							}
							if err != nil && bad.Add(1) < 5 {
								t.Error(err)
							}
							last = v
						}
					}()
				}
				val := make([]byte, 256<<10)
				for i := uint64(1); i <= writes; i++ {
					n := 16 + int(i)*((256<<10)-16)/writes
					before := f.Size()
					if _, err := f.Write("hot", selfCheck(val, i, n)); err != nil {
						t.Fatal(err)
					}
					if f.Size() > before {
						grows++ // and the value went to the new pages
					}
					if i%10 == 0 { // push the data end: the next bigger slot is past it
						if _, err := f.Allocate(fmt.Sprintf("fill%d", i), nil, 16<<10); err != nil {
							t.Fatal(err)
						}
					}
				}
				stop.Store(true)
				wg.Wait()
			}
			if bad.Load() != 0 {
				t.Fatalf("%d bad reads of %d", bad.Load(), reads.Load())
			}
			t.Logf("%d reads, none bad; the files grew %d times while the value moved", reads.Load(), grows)
		})
	}
}

func TestMappedReadAllocs(t *testing.T) {
	f := backends[0].create(t, Options{})
	f.Allocate("v", make([]byte, 64), 0)
	m := mapFile(t, f)
	buf := make([]byte, 64)
	if n := testing.AllocsPerRun(1000, func() { m.Read("v", buf) }); n != 0 {
		t.Fatalf("%v allocations per read", n)
	}
}
