package shm

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestSeqlockNoTornReads hammers one variable with values whose every byte
// equals the value's length (mod 256), growing and shrinking it so it also
// relocates, while readers on mappings check each copy is whole.
func TestSeqlockNoTornReads(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			f := be.create(t, Options{MaxSize: 256 << 20})
			if _, err := f.Allocate("hot", []byte{1}, 0); err != nil {
				t.Fatal(err)
			}
			var stop atomic.Bool
			var reads, torn atomic.Int64
			var wg sync.WaitGroup
			for r := 0; r < 3; r++ {
				m := mapFile(t, f)
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 0, 8192)
					var last uint64
					for !stop.Load() {
						b, v, err := m.Read("hot", buf)
						if err != nil {
							t.Error(err)
							return
						}
						if v < last {
							t.Errorf("version went back: %d after %d", v, last)
						}
						last = v
						for _, c := range b {
							if c != byte(len(b)) {
								torn.Add(1)
								break
							}
						}
						reads.Add(1)
					}
				}()
			}
			val := make([]byte, 8192)
			for i := 0; i < 50000; i++ {
				n := 1 + (i*37)%4000
				if i%5000 == 0 {
					n = 8000
				}
				for j := 0; j < n; j++ {
					val[j] = byte(n)
				}
				if _, err := f.Write("hot", val[:n]); err != nil {
					t.Fatal(err)
				}
			}
			stop.Store(true)
			wg.Wait()
			if torn.Load() != 0 {
				t.Fatalf("%d torn reads of %d", torn.Load(), reads.Load())
			}
			t.Logf("%d reads, none torn", reads.Load())
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
