package shm

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestSpaceReplaceUnderReads: readers hammer the current Mapping of a Space
// while it is replaced, over and over, by files of other layouts and sizes
// (memfd and regular file) and by zero pages. Every read either returns the
// value of the file its Mapping was made for or ErrReplaced: never another
// file's value, a fault or a spurious error. The replaced files are no longer
// mapped, and the Space holds one range per doubling, not one per replacement.
func TestSpaceReplaceUnderReads(t *testing.T) {
	opts := []Options{{DirCapacity: 4, MaxSize: 1 << 20}, {DirCapacity: 64, MaxSize: 3 << 20}, {DirCapacity: 16, MaxSize: 2 << 20}}
	var files []*File
	for i, o := range opts {
		f := backends[i%2].create(t, o)
		// Other variables first, so "v" sits at a different entry and offset in each.
		for j := 0; j < i*3; j++ {
			if _, err := f.Allocate("pad"+strconv.Itoa(j), bytes.Repeat([]byte("p"), 300*(j+1)), 0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.Allocate("v", bytes.Repeat([]byte{'a' + byte(i)}, 100+i*50), 0); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	var s Space
	defer s.Close()
	want := make(map[*Mapping]byte) // guarded by mu
	var mu sync.Mutex
	var cur atomic.Pointer[Mapping]
	install := func(i int) {
		ro, err := files[i].OpenReadOnly()
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Map(ro)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		want[m] = 'a' + byte(i)
		mu.Unlock()
		cur.Store(m)
	}
	install(0)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, replaced atomic.Int64
	errc := make(chan error, 2)
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 256)
			for !stop.Load() {
				m := cur.Load()
				if m == nil {
					continue
				}
				mu.Lock()
				w := want[m]
				mu.Unlock()
				v, _, err := m.Read("v", buf[:0])
				reads.Add(1)
				if errors.Is(err, ErrReplaced) {
					replaced.Add(1)
					continue
				}
				if err != nil || len(v) == 0 || v[0] != w || v[len(v)-1] != w {
					errc <- errors.New("read " + strconv.Quote(string(v)) + " for file " + string(w) + ": " + errString(err))
					return
				}
			}
		}()
	}
	for n := 0; n < 300 && len(errc) == 0; n++ {
		if n%7 == 6 {
			cur.Store(nil)
			if err := s.Clear(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		install(n % len(files))
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	t.Logf("%d reads, %d replaced", reads.Load(), replaced.Load())
	if n := len(s.ranges); n > 2 {
		t.Fatalf("%d ranges reserved for files of at most 3 MiB starting at 1 MiB", n)
	}
	// The last install was files[2]; files[0], a regular file mapped many
	// times, is mapped no more once its writer is closed.
	fi, err := os.Stat(files[0].Path())
	if err != nil {
		t.Fatal(err)
	}
	if err := files[0].Close(); err != nil {
		t.Fatal(err)
	}
	if isMapped(t, fi.Sys().(*syscall.Stat_t).Ino) {
		t.Fatal("a replaced file is still mapped")
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// isMapped reports whether a file with inode ino is mapped in this process.
func isMapped(t *testing.T, ino uint64) bool {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[4] == strconv.FormatUint(ino, 10) {
			return true
		}
	}
	return false
}

// BenchmarkMappingRead reads a 64-byte value from a Mapping of each backend
// (a regular file's reads are guarded against faults, a sealed memfd's are
// not) and from a Mapping of a Space (always guarded).
func BenchmarkMappingRead(b *testing.B) {
	for i, name := range []string{"file", "memfd", "space"} {
		b.Run(name, func(b *testing.B) {
			f, err := CreateMemfd("b", "s", Options{})
			if i == 0 {
				f, err = Create(b.TempDir()+"/svc.mem", "b", "s", Options{})
			}
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Allocate("v", make([]byte, 64), 0); err != nil {
				b.Fatal(err)
			}
			var m *Mapping
			if i < 2 {
				m = mapFileB(b, f)
			} else {
				var s Space
				defer s.Close()
				ro, err := f.OpenReadOnly()
				if err != nil {
					b.Fatal(err)
				}
				if m, err = s.Map(ro); err != nil {
					b.Fatal(err)
				}
			}
			buf := make([]byte, 0, 64)
			b.ReportAllocs()
			for b.Loop() {
				if buf, _, err = m.Read("v", buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
