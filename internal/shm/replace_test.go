package shm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReplace: a replaced file's mappings fail with ErrServiceReplaced and
// their Waits wake, while the new file holds every value; a file renamed over
// the old path is what the path names now.
func TestReplace(t *testing.T) {
	for _, backend := range []string{"file", "memfd"} {
		t.Run(backend, func(t *testing.T) {
			var f *File
			var err error
			path := filepath.Join(t.TempDir(), "s.mem")
			if backend == "memfd" {
				f, err = CreateMemfd("t", "s", Options{MaxSize: 1 << 20})
			} else {
				f, err = Create(path, "t", "s", Options{MaxSize: 1 << 20})
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Allocate("v", []byte("one"), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write("v", []byte("two")); err != nil {
				t.Fatal(err)
			}
			ro, err := f.OpenReadOnly()
			if err != nil {
				t.Fatal(err)
			}
			m, err := Map(ro)
			ro.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			seq := m.ChangeSeq()
			woke := make(chan error, 1)
			go func() {
				_, err := m.Wait(context.Background(), seq)
				woke <- err
			}()

			nf, err := f.Replace()
			if err != nil {
				t.Fatal(err)
			}
			defer nf.Close()
			f.MarkReplaced()
			f.Close()
			select {
			case err := <-woke:
				// A waiter may see the bumped sequence before the mark.
				if err != nil && !errors.Is(err, ErrServiceReplaced) {
					t.Errorf("Wait: %v, want ErrServiceReplaced or a new sequence", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := m.Wait(ctx, m.ChangeSeq()); !errors.Is(err, ErrServiceReplaced) {
					t.Errorf("Wait after the wake: %v, want ErrServiceReplaced", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Wait did not wake")
			}
			if _, _, err := m.Read("v", nil); !errors.Is(err, ErrServiceReplaced) {
				t.Errorf("old mapping: %v, want ErrServiceReplaced", err)
			}
			if !m.FileReplaced() || m.Deleted() || m.Replaced() {
				t.Errorf("FileReplaced %v, Deleted %v, Replaced %v; want true, false, false", m.FileReplaced(), m.Deleted(), m.Replaced())
			}
			v, ver, err := nf.Read("v", nil)
			if err != nil || string(v) != "two" || ver != 2 {
				t.Fatalf("new file: %q version %d, %v", v, ver, err)
			}
			if _, err := nf.Write("v", []byte("three")); err != nil {
				t.Fatal(err)
			}
			ro, err = nf.OpenReadOnly()
			if err != nil {
				t.Fatal(err)
			}
			nm, err := Map(ro)
			ro.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer nm.Close()
			if v, _, err := nm.Read("v", nil); err != nil || string(v) != "three" {
				t.Fatalf("new mapping: %q, %v", v, err)
			}
			if backend == "file" {
				if nf.Path() != path {
					t.Errorf("new path %q, want %q", nf.Path(), path)
				}
				a, _ := os.Stat(path)
				b, _ := nf.Stat()
				if !os.SameFile(a, b) {
					t.Error("the path does not name the new file")
				}
				if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
					t.Errorf("%d files left in the directory, want 1", len(ents))
				}
			}
		})
	}
}
