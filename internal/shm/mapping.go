package shm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"sync/atomic"
	"time"
)

// Mapping is a read-only view of a service file, for clients. Read takes no
// lock, makes no system call and does not allocate once dst is large enough.
// A Mapping is safe for concurrent use; Close must not race with other calls.
//
// Nothing in the file is trusted: every offset is checked against the mapping
// before use, and a fault from a file that shrank under the mapping (which a
// sealed memfd or a well-behaved broker never does) is turned into ErrCorrupt.
type Mapping struct {
	f     *os.File
	mem   []byte // read-only, max_size long: the file only grows, never past it
	hdr   header // validated by Map; fixed fields are never read again
	ix    atomic.Pointer[dirIndex]
	fence fence

	noFault     bool         // a sealed memfd: it cannot shrink, so reads need no fault guard
	space       *Space       // if not nil, mem belongs to it (see Space)
	replaced    atomic.Bool  // the Space mapped something else over mem
	interrupted atomic.Bool  // see Interrupt
	waitSlice   atomic.Int64 // see SetWaitSlice; 0: DefaultWaitSlice
}

// testHookBeforeSeqlock, if set, runs in Read just before the seqlock loop.
var testHookBeforeSeqlock func()

// testHookReadDone, if set, runs when a mapped read has its value.
var testHookReadDone func()

// dirIndex caches where each variable's entry is, for one generation.
// partial: some entry was busy (odd seq) while it was built, so a name it
// lacks may still exist.
type dirIndex struct {
	gen     uint64
	names   map[string]int
	partial bool
}

// Map maps f, a descriptor of a service file (read-only is enough), and takes
// ownership of it.
func Map(f *os.File) (*Mapping, error) {
	h, err := readMapHeader(f)
	if err != nil {
		return nil, err
	}
	mem, err := mapShared(f, int(h.maxSize), false)
	if err != nil {
		return nil, err
	}
	return &Mapping{f: f, mem: mem, hdr: h, noFault: cannotShrink(f)}, nil
}

// readMapHeader reads and validates the header of the service file f.
func readMapHeader(f *os.File) (header, error) {
	fi, err := f.Stat()
	if err != nil {
		return header{}, fmt.Errorf("shm: map: %w", err)
	}
	page := make([]byte, HeaderSize)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, HeaderSize), page); err != nil {
		return header{}, fmt.Errorf("shm: map: %w: short header: %w", ErrCorrupt, err)
	}
	h, err := parseHeader(page, uint64(fi.Size()))
	if err != nil {
		return header{}, fmt.Errorf("shm: map: %w", err)
	}
	return h, nil
}

// guardFault makes a fault on the mapping (SIGBUS: the file shrank under it)
// panic instead of killing the process, and turns that panic, or any other
// runtime error the file's contents could cause, into ErrCorrupt. Use it as
// defer guardFault(debug.SetPanicOnFault(true), &err).
func guardFault(old bool, err *error) {
	if r := recover(); r != nil {
		debug.SetPanicOnFault(old)
		re, ok := r.(error)
		if !ok {
			panic(r)
		}
		*err = fmt.Errorf("%w: %w", ErrCorrupt, re)
		return
	}
	debug.SetPanicOnFault(old)
}

// Read copies the named value into dst (grown if it is too small) and returns
// it with its version. Errors: ErrNotFound (no live variable has the name),
// ErrBusy (the value kept changing, or its entry stayed mid-change, for
// busyTimeout: a broker killed mid-publish, until it is restarted),
// ErrServiceDeleted, ErrServiceReplaced, ErrCorrupt and ErrClosed; for a
// Mapping of a Space, ErrReplaced.
func (m *Mapping) Read(name string, dst []byte) (_ []byte, _ uint64, err error) {
	out, si, err := m.read(name, dst)
	// Loaded after every load from mem (seq-cst; readEntry's loadFence keeps
	// the copy before it): if the Space mapped another file over mem before
	// any of them, this sees the store that preceded that mmap.
	if m.replaced.Load() {
		return dst, 0, ErrReplaced
	}
	return out, si.version, err
}

func (m *Mapping) read(name string, dst []byte) (_ []byte, _ slotInfo, err error) {
	if m.mem == nil {
		return dst, slotInfo{}, ErrClosed
	}
	if !m.noFault {
		defer guardFault(debug.SetPanicOnFault(true), &err)
	}
	if m.deleted() {
		return dst, slotInfo{}, m.goneErr()
	}
	var ix *dirIndex
	for try := 0; ; try++ {
		ix = m.index(ix)
		i, ok := ix.names[name]
		if !ok {
			if ix.partial {
				if try == 0 {
					continue // look again: the busy entry may be this one
				}
				return dst, slotInfo{}, ErrBusy
			}
			return dst, slotInfo{}, ErrNotFound
		}
		if testHookBeforeSeqlock != nil {
			testHookBeforeSeqlock()
		}
		out, si, err := readEntry(m.mem, m.hdr.dataOff, entryOff(m.hdr.dirOff, i), name, dst, &m.fence, &m.replaced)
		if err != nil && try == 0 && errors.Is(err, ErrNotFound) && u64(m.mem, offGeneration).Load() != ix.gen {
			continue // the entry was reused since the index was built
		}
		if err == nil && testHookReadDone != nil {
			testHookReadDone()
		}
		return out, si, err
	}
}

// deleted reports whether the broker marked the service deleted or the file
// replaced.
func (m *Mapping) deleted() bool {
	return u32(m.mem, offFlags).Load()&flagStop != 0 // acquire
}

// index returns the directory index for the current generation. stale, if
// not nil, is an index the caller found wanting: it is rebuilt even if its
// generation is current.
func (m *Mapping) index(stale *dirIndex) *dirIndex {
	g := u64(m.mem, offGeneration).Load() // acquire: entries published before the bump are seen
	if ix := m.ix.Load(); ix != nil && ix.gen == g && ix != stale {
		return ix
	}
	ix := &dirIndex{gen: g, names: make(map[string]int)}
	n := min(int(u32(m.mem, offEntryCount).Load()), m.hdr.dirCap)
	for i := 0; i < n; i++ {
		name, live, busy := m.entryName(i)
		ix.partial = ix.partial || busy
		if live {
			ix.names[name] = i
		}
	}
	m.ix.Store(ix)
	return ix
}

// entryName reads the name of entry i under its seqlock, and whether it is
// live. busy: the entry stayed mid-change for busyTimeout.
func (m *Mapping) entryName(i int) (name string, live, busy bool) {
	e := entryOff(m.hdr.dirOff, i)
	seq := u64(m.mem, e+entSeq)
	var b backoff
	for b.retry(&m.replaced) {
		s1 := seq.Load() // acquire
		if s1&1 != 0 {
			continue
		}
		live := u64(m.mem, e+entState).Load()&stateLive != 0
		nl := min(uint64(le.Uint16(m.mem[e+entNameLen:])), MaxNameLen)
		name := string(m.mem[e+entName : e+entName+nl])
		loadFence(&m.fence)
		if seq.Load() == s1 {
			return name, live && nl > 0, false
		}
	}
	return "", false, true
}

// Variables describes every live variable, sorted by name. Each VarInfo
// comes from one consistent read of its entry. Variables that cannot be read
// (busy, or removed meanwhile) are left out.
func (m *Mapping) Variables() []VarInfo {
	if m.mem == nil {
		return nil
	}
	ix := m.index(nil)
	out := make([]VarInfo, 0, len(ix.names))
	var buf []byte
	for name := range ix.names {
		var si slotInfo
		var err error
		buf, si, err = m.read(name, buf[:0])
		if err != nil {
			continue
		}
		out = append(out, VarInfo{Name: name, Size: uint64(len(buf)), Capacity: si.capacity, Version: si.version})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names identify the tenant and service the file belongs to.
func (m *Mapping) Names() (tenant, service string) { return headerNames(m.mem) }

// Generation changes whenever a variable is allocated or deallocated, and
// when the broker repairs the file after a crash.
func (m *Mapping) Generation() uint64 { return u64(m.mem, offGeneration).Load() }

// ChangeSeq is the file's change sequence, bumped after every applied change
// (and by the repair after a crash, and when the service is deleted). It is a
// 32-bit futex word: it wraps.
func (m *Mapping) ChangeSeq() uint32 { return u32(m.mem, offChangeSeq).Load() }

// Deleted reports whether the broker deleted the service: reads then fail
// with ErrServiceDeleted.
func (m *Mapping) Deleted() bool {
	return m.mem != nil && u32(m.mem, offFlags).Load()&flagDeleted != 0 // acquire
}

// Size is the number of bytes of the file currently in use by the layout.
func (m *Mapping) Size() int64 { return int64(u64(m.mem, offFileSize).Load()) }

// SetWaitSlice bounds one futex sleep of Wait (DefaultWaitSlice if d <= 0):
// how soon Wait notices its context or a change whose wake was lost. Tests
// make it long to prove that the wake, not the slice, ends a Wait.
func (m *Mapping) SetWaitSlice(d time.Duration) { m.waitSlice.Store(int64(d)) }

// Replaced reports whether m's Space mapped another file (or zero pages)
// over it: what was read from it since may not be its file's.
func (m *Mapping) Replaced() bool { return m.replaced.Load() }

// Close unmaps the file and closes its descriptor. It is safe to call more
// than once. A Mapping of a Space only closes its descriptor: the Space
// unmaps the memory.
func (m *Mapping) Close() error {
	if m.space != nil {
		if m.f == nil {
			return nil
		}
		err := m.f.Close()
		m.f = nil
		return err
	}
	var errs []error
	if m.mem != nil {
		errs = append(errs, unmap(m.mem))
		m.mem = nil
	}
	if m.f != nil {
		errs = append(errs, m.f.Close())
		m.f = nil
	}
	return errors.Join(errs...)
}
