package shm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type backend struct {
	name   string
	create func(t *testing.T, o Options) *File
}

var backends = []backend{
	{"file", func(t *testing.T, o Options) *File {
		f, err := Create(filepath.Join(t.TempDir(), "svc.mem"), "acme", "orders", o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}},
	{"memfd", func(t *testing.T, o Options) *File {
		f, err := CreateMemfd("acme", "orders", o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}},
}

func mapFile(t *testing.T, f *File) *Mapping {
	t.Helper()
	ro, err := f.OpenReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Map(ro)
	if err != nil {
		ro.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mustRead(t *testing.T, r interface {
	Read(string, []byte) ([]byte, uint64, error)
}, name string) ([]byte, uint64) {
	t.Helper()
	b, v, err := r.Read(name, nil)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b, v
}

func TestWriteReadGrow(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			f := be.create(t, Options{MaxSize: 64 << 20})
			m := mapFile(t, f)
			if tn, sn := m.Names(); tn != "acme" || sn != "orders" {
				t.Fatalf("names %q %q", tn, sn)
			}
			want := map[string][]byte{}
			vers := map[string]uint64{}
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 40; i++ {
				name := fmt.Sprintf("v%02d", i)
				data := bytes.Repeat([]byte{byte(i)}, rng.IntN(100))
				v, err := f.Allocate(name, data, 0)
				if err != nil || v != 1 {
					t.Fatalf("allocate %s: %d %v", name, v, err)
				}
				want[name], vers[name] = data, 1
			}
			sizeBefore := f.Size()
			for i := 0; i < 2000; i++ {
				name := fmt.Sprintf("v%02d", rng.IntN(40))
				n := rng.IntN(300)
				if i%97 == 0 {
					n = 100000 + rng.IntN(50000) // forces relocation and file growth
				}
				data := make([]byte, n)
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				v, err := f.Write(name, data)
				if err != nil {
					t.Fatalf("write %s (%d bytes): %v", name, n, err)
				}
				if v != vers[name]+1 {
					t.Fatalf("write %s: version %d after %d", name, v, vers[name])
				}
				want[name], vers[name] = data, v
			}
			if f.Size() <= sizeBefore {
				t.Fatalf("file did not grow: %d", f.Size())
			}
			if fi, _ := f.Stat(); fi.Size() != f.Size() {
				t.Fatalf("Size %d, stat %d", f.Size(), fi.Size())
			}
			for name, data := range want {
				for _, r := range []interface {
					Read(string, []byte) ([]byte, uint64, error)
				}{f, m} {
					got, v := mustRead(t, r, name)
					if !bytes.Equal(got, data) || v != vers[name] {
						t.Fatalf("%s: got %d bytes v%d, want %d bytes v%d", name, len(got), v, len(data), vers[name])
					}
				}
			}
			vars := m.Variables()
			if len(vars) != 40 {
				t.Fatalf("%d variables", len(vars))
			}
			for _, vi := range vars {
				if vi.Size != uint64(len(want[vi.Name])) || vi.Version != vers[vi.Name] || vi.Capacity < vi.Size {
					t.Fatalf("info %+v", vi)
				}
			}
		})
	}
}

func TestAllocateDeallocate(t *testing.T) {
	f := backends[0].create(t, Options{DirCapacity: 4, MaxSize: 1 << 20})
	m := mapFile(t, f)
	for _, n := range []string{"a", "b", "c", "d"} {
		if _, err := f.Allocate(n, []byte(n), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Allocate("e", nil, 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("allocate into a full directory: %v", err)
	}
	if _, err := f.Allocate("a", nil, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("allocate twice: %v", err)
	}
	mustRead(t, m, "b") // cache the index
	if err := f.Deallocate("b"); err != nil {
		t.Fatal(err)
	}
	if err := f.Deallocate("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deallocate twice: %v", err)
	}
	if _, _, err := m.Read("b", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read deallocated: %v", err)
	}
	// The entry is reused for a new name: the old name must not read it.
	if _, err := f.Allocate("e", []byte("eee"), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Read("b", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read reused entry under old name: %v", err)
	}
	if got, _ := mustRead(t, m, "e"); string(got) != "eee" {
		t.Fatalf("e = %q", got)
	}
	if _, err := f.Allocate("big", nil, 2<<20); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("allocate past max size: %v", err)
	}
	if _, err := f.Write("a", make([]byte, 1020<<10)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write past max size: %v", err)
	}
	if got, v := mustRead(t, m, "a"); string(got) != "a" || v != 1 {
		t.Fatalf("failed write changed a: %q v%d", got, v)
	}
}

func TestWriteBatchAllOrNone(t *testing.T) {
	f := backends[0].create(t, Options{})
	f.Allocate("x", []byte("1"), 0)
	f.Allocate("y", []byte("2"), 0)
	for _, names := range [][]string{{"x", "nope"}, {"x", "x"}} {
		if _, err := f.WriteBatch(names, [][]byte{[]byte("a"), []byte("b")}, nil); err == nil {
			t.Fatalf("%v: no error", names)
		}
	}
	if got, v := mustRead(t, f, "x"); string(got) != "1" || v != 1 {
		t.Fatalf("failed batch changed x: %q v%d", got, v)
	}
	vs, err := f.WriteBatch([]string{"x", "y"}, [][]byte{[]byte("a"), []byte("b")}, nil)
	if err != nil || len(vs) != 2 || vs[0] != 2 || vs[1] != 2 {
		t.Fatalf("batch: %v %v", vs, err)
	}
}

func TestRecover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.mem")
	f, err := Create(path, "acme", "orders", Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Allocate("a", []byte("alpha"), 0)
	f.Allocate("b", []byte("beta"), 0)
	f.Allocate("gone", []byte("x"), 0)
	f.Write("a", bytes.Repeat([]byte("A"), 5000)) // relocates
	f.Write("b", []byte("beta2"))
	f.Deallocate("gone")
	// Simulate a crash in the middle of publishing b: seq left odd.
	eb := entryOff(f.dirOff, f.index["b"])
	u64(f.mem, eb+entSeq).Add(1)
	// And a replaced slot of a whose descriptor points past the file.
	ea := entryOff(f.dirOff, f.index["a"])
	st := u64(f.mem, ea+entState).Load()
	in := slotOff(ea, 1-(st&stateActive)>>1)
	u64(f.mem, in).Store(f.size + 4096)
	f.Close()

	g, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if got, v := mustRead(t, g, "a"); !bytes.Equal(got, bytes.Repeat([]byte("A"), 5000)) || v != 2 {
		t.Fatalf("a: %d bytes v%d", len(got), v)
	}
	if got, v := mustRead(t, g, "b"); string(got) != "beta2" || v != 2 {
		t.Fatalf("b: %q v%d", got, v)
	}
	if g.Has("gone") || g.Len() != 2 {
		t.Fatalf("recovered %v", g.Variables())
	}
	// The repaired file takes new writes, reusing freed space.
	for i := 0; i < 20; i++ {
		if _, err := g.Write("a", bytes.Repeat([]byte{byte(i)}, 6000+i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Allocate("c", []byte("c"), 0); err != nil {
		t.Fatal(err)
	}
	tn, sn := g.Names()
	if tn != "acme" || sn != "orders" {
		t.Fatalf("names %q %q", tn, sn)
	}
}

func TestOpenRejectsCorrupt(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":     nil,
		"garbage":   bytes.Repeat([]byte{0xAB}, 8192),
		"magiconly": append([]byte(Magic), make([]byte, 8192)...),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		if _, err := Open(p); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestChangeSeq(t *testing.T) {
	f := backends[1].create(t, Options{})
	m := mapFile(t, f)
	s0 := m.ChangeSeq()
	f.Changed()
	f.Changed()
	if m.ChangeSeq() != s0+2 {
		t.Fatalf("change seq %d -> %d", s0, m.ChangeSeq())
	}
}

func TestRestoreMemfd(t *testing.T) {
	f, err := CreateMemfd("acme", "orders", Options{MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	f.Allocate("a", []byte("alpha"), 0)
	f.Allocate("gone", []byte("x"), 0)
	big := bytes.Repeat([]byte("B"), 200<<10) // grows the file past its first size
	if _, err := f.Allocate("big", big, 0); err != nil {
		t.Fatal(err)
	}
	f.Write("a", []byte("alpha2"))
	f.Deallocate("gone")
	// What a service manager holds: a read-only descriptor; the broker that
	// made the memfd is gone.
	kept, err := f.OpenReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	f.Close()

	g, err := RestoreMemfd(kept)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if tn, sn := g.Names(); tn != "acme" || sn != "orders" {
		t.Fatalf("names %q %q", tn, sn)
	}
	if got, v := mustRead(t, g, "a"); string(got) != "alpha2" || v != 2 {
		t.Fatalf("a: %q v%d", got, v)
	}
	if got, _ := mustRead(t, g, "big"); !bytes.Equal(got, big) {
		t.Fatalf("big: %d bytes", len(got))
	}
	if g.Has("gone") || g.Len() != 2 {
		t.Fatalf("restored %v", g.Variables())
	}
	// The copy takes writes, a client maps it, and the original is untouched.
	if _, err := g.Write("a", []byte("alpha3")); err != nil {
		t.Fatal(err)
	}
	if got, _ := mustRead(t, mapFile(t, g), "a"); string(got) != "alpha3" {
		t.Fatalf("mapped copy: %q", got)
	}
	m, err := Map(kept)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got, _ := mustRead(t, m, "a"); string(got) != "alpha2" {
		t.Fatalf("original after the copy was written: %q", got)
	}
	// The copy is sealed like a new memfd: not even its owner gets a new
	// writable mapping.
	rw, err := os.OpenFile(g.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, err := mapShared(rw, 4096, true); err == nil {
		t.Fatal("the restored memfd maps writable")
	}
}

func TestRestoreMemfdRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.mem")
	f, err := Create(path, "acme", "orders", Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	regular, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	if _, err := RestoreMemfd(regular); err == nil || !strings.Contains(err.Error(), "not a sealable memfd") {
		t.Errorf("a regular file: %v", err)
	}
	garbage, err := memfdCreate("garbage")
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	garbage.Write(bytes.Repeat([]byte{0xAB}, 8192))
	if _, err := RestoreMemfd(garbage); !errors.Is(err, ErrCorrupt) {
		t.Errorf("garbage: %v", err)
	}
}
