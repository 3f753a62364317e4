package shm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReadWhileGrowing: the writer grows the file and publishes the value in
// the new pages after the reader looked the variable up but before its
// seqlock loop. A reader holding a file size from before the growth took the
// new slot for out of bounds and reported ErrCorrupt.
func TestReadWhileGrowing(t *testing.T) {
	f := backends[1].create(t, Options{MaxSize: 64 << 20})
	if _, err := f.Allocate("v", []byte("small"), 0); err != nil {
		t.Fatal(err)
	}
	m := mapFile(t, f)
	mustRead(t, m, "v")
	big := bytes.Repeat([]byte("G"), 1<<20) // past the file's end: it grows
	before := f.Size()
	testHookBeforeSeqlock = func() {
		testHookBeforeSeqlock = nil
		if _, err := f.Write("v", big); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { testHookBeforeSeqlock = nil })
	got, _, err := m.Read("v", nil)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read during growth: %d bytes, %v", len(got), err)
	}
	if f.Size() <= before {
		t.Fatalf("the file did not grow (%d bytes)", f.Size())
	}
}

// TestRecoverMappedReader: the broker dies in the middle of publishing b (its
// seq stays odd) while a client holds a mapping. The reader's index, built
// while b was busy, must not hide b for good: b is busy (not missing) until
// the repair, and readable right after it; the repair bumps generation and
// change_seq so that cached indexes are rebuilt and watchers wake.
func TestRecoverMappedReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.mem")
	f, err := Create(path, "acme", "orders", Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Allocate("a", []byte("alpha"), 0)
	f.Allocate("b", []byte("beta"), 0)
	m := mapFile(t, f)
	seq0, gen0 := m.ChangeSeq(), m.Generation()
	u64(f.mem, entryOff(f.dirOff, f.index["b"])+entSeq).Add(1) // killed mid-publish
	if got, _ := mustRead(t, m, "a"); string(got) != "alpha" {
		t.Fatalf("a = %q", got)
	}
	if _, _, err := m.Read("b", nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("b while its entry is odd: %v, want ErrBusy", err)
	}
	f.Close()
	g, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if got, _ := mustRead(t, m, "b"); string(got) != "beta" {
		t.Fatalf("b after the repair = %q", got)
	}
	if m.ChangeSeq() == seq0 || m.Generation() == gen0 {
		t.Fatalf("repair left change_seq %d (was %d), generation %d (was %d)", m.ChangeSeq(), seq0, m.Generation(), gen0)
	}
}

// TestVariablesConsistent: every VarInfo comes from one consistent read of
// its entry. The writer moves the value from a large slot to a small one
// right after the reader copied it: a capacity loaded after the copy belongs
// to the small slot, and the size would pass it.
func TestVariablesConsistent(t *testing.T) {
	f := backends[1].create(t, Options{})
	f.Allocate("v", []byte("x"), 0)
	if _, err := f.Write("v", make([]byte, 4000)); err != nil { // slot 1: 4032 bytes
		t.Fatal(err)
	}
	m := mapFile(t, f)
	testHookReadDone = func() {
		testHookReadDone = nil
		if _, err := f.Write("v", make([]byte, 8)); err != nil { // slot 0: 64 bytes
			t.Error(err)
		}
	}
	t.Cleanup(func() { testHookReadDone = nil })
	vs := m.Variables()
	if len(vs) != 1 || vs[0].Size != 4000 || vs[0].Capacity < vs[0].Size || vs[0].Version != 2 {
		t.Fatalf("Variables: %+v", vs)
	}
}

// TestWriteEmptyFirst: an empty value written to a variable that has no
// second slot yet gets a slot; it was written at offset 0, over the header.
func TestWriteEmptyFirst(t *testing.T) {
	f := backends[1].create(t, Options{})
	f.Allocate("v", []byte("x"), 0)
	if _, err := f.Write("v", nil); err != nil {
		t.Fatal(err)
	}
	if string(f.mem[offMagic:offMagic+8]) != Magic {
		t.Fatalf("header clobbered: magic %q", f.mem[offMagic:offMagic+8])
	}
	m := mapFile(t, f)
	if got, v := mustRead(t, m, "v"); len(got) != 0 || v != 2 {
		t.Fatalf("v = %q v%d", got, v)
	}
	if _, err := f.Write("v", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got, _ := mustRead(t, m, "v"); string(got) != "again" {
		t.Fatalf("v = %q", got)
	}
}

// TestWriteBatchDoesNotFit: a batch whose values together do not fit changes
// nothing, even when the first ones would fit alone.
func TestWriteBatchDoesNotFit(t *testing.T) {
	f := backends[1].create(t, Options{MaxSize: 1 << 20})
	f.Allocate("x", []byte("x1"), 0)
	f.Allocate("y", []byte("y1"), 0)
	f.Allocate("z", []byte("z1"), 0)
	big := make([]byte, 400<<10) // one fits, two do not
	_, err := f.WriteBatch([]string{"x", "y", "z"}, [][]byte{[]byte("x2"), big, big}, nil)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("batch past the maximum: %v", err)
	}
	m := mapFile(t, f)
	for _, n := range []string{"x", "y", "z"} {
		if got, v := mustRead(t, m, n); string(got) != n+"1" || v != 1 {
			t.Fatalf("%s = %q v%d after a refused batch", n, got, v)
		}
	}
	if _, err := f.WriteBatch([]string{"x", "y"}, [][]byte{[]byte("x2"), big}, nil); err != nil {
		t.Fatalf("a batch that fits: %v", err)
	}
}

// TestTruncatedUnderMapping: a regular service file truncated under a
// mapping (by someone other than the broker) makes reads fail with
// ErrCorrupt instead of killing the process with SIGBUS. A sealed memfd
// cannot shrink, so its reads skip the guard.
func TestTruncatedUnderMapping(t *testing.T) {
	f := backends[0].create(t, Options{})
	if _, err := f.Allocate("v", bytes.Repeat([]byte("v"), 1000), 0); err != nil {
		t.Fatal(err)
	}
	m := mapFile(t, f)
	mustRead(t, m, "v")
	if m.noFault {
		t.Fatal("a regular file's mapping skips the fault guard")
	}
	if err := os.Truncate(f.Path(), 2*4096); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Read("v", nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a truncated file: %v", err)
	}
	// The broker's writer is guarded the same way, and quarantines the file.
	if _, err := f.Write("v", []byte("x")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write to a truncated file: %v", err)
	}
	if f.Damaged() == nil {
		t.Fatal("the file is not marked damaged")
	}
	if mm := mapFile(t, backends[1].create(t, Options{})); !mm.noFault {
		t.Fatal("a sealed memfd's mapping keeps the fault guard")
	}
}
