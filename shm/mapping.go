package shm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync/atomic"
)

// Mapping is a read-only view of a service file, for clients. Read takes no
// lock, makes no system call and does not allocate once dst is large enough.
// A Mapping is safe for concurrent use; Close must not race with other calls.
type Mapping struct {
	f      *os.File
	mem    []byte // read-only, MaxSize long: the file only grows, never past it
	dirOff uint64
	ix     atomic.Pointer[dirIndex]
	fence  fence

	interrupted atomic.Bool // see Interrupt
}

// dirIndex caches where each variable's entry is, for one generation.
type dirIndex struct {
	gen   uint64
	names map[string]int
}

// Map maps f, a descriptor of a service file (read-only is enough), and takes
// ownership of it.
func Map(f *os.File) (*Mapping, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm: map: %w", err)
	}
	page := make([]byte, HeaderSize)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, HeaderSize), page); err != nil {
		return nil, fmt.Errorf("shm: map: %w: short header: %w", ErrCorrupt, err)
	}
	h, err := parseHeader(page, uint64(fi.Size()))
	if err != nil {
		return nil, fmt.Errorf("shm: map: %w", err)
	}
	mem, err := mapShared(f, int(h.maxSize), false)
	if err != nil {
		return nil, err
	}
	return &Mapping{f: f, mem: mem, dirOff: h.dirOff}, nil
}

// Read copies the named value into dst (grown if it is too small) and returns
// it with its version.
func (m *Mapping) Read(name string, dst []byte) ([]byte, uint64, error) {
	if m.mem == nil {
		return dst, 0, ErrClosed
	}
	for try := 0; ; try++ {
		ix := m.index()
		i, ok := ix.names[name]
		if !ok {
			return dst, 0, ErrNotFound
		}
		size := u64(m.mem, offFileSize).Load() // acquire: pages below it exist
		out, v, err := readEntry(m.mem, size, entryOff(m.dirOff, i), name, dst, &m.fence)
		if errors.Is(err, ErrNotFound) && try == 0 && u64(m.mem, offGeneration).Load() != ix.gen {
			continue // the entry was reused since the index was built
		}
		return out, v, err
	}
}

// index returns the directory index for the current generation.
func (m *Mapping) index() *dirIndex {
	g := u64(m.mem, offGeneration).Load()
	if ix := m.ix.Load(); ix != nil && ix.gen == g {
		return ix
	}
	ix := &dirIndex{gen: g, names: make(map[string]int)}
	n := min(int(u32(m.mem, offEntryCount).Load()), m.dirCap())
	for i := 0; i < n; i++ {
		if name, ok := m.entryName(i); ok {
			ix.names[name] = i
		}
	}
	m.ix.Store(ix)
	return ix
}

func (m *Mapping) dirCap() int { return int(le.Uint32(m.mem[offDirCapacity:])) }

// entryName reads the name of entry i under its seqlock, if it is live.
func (m *Mapping) entryName(i int) (string, bool) {
	e := entryOff(m.dirOff, i)
	seq := u64(m.mem, e+entSeq)
	for b := (backoff{}); b.retry(); {
		s1 := seq.Load()
		if s1&1 != 0 {
			continue
		}
		live := u64(m.mem, e+entState).Load()&stateLive != 0
		nl := min(uint64(le.Uint16(m.mem[e+entNameLen:])), MaxNameLen)
		name := string(m.mem[e+entName : e+entName+nl])
		loadFence(&m.fence)
		if seq.Load() == s1 {
			return name, live && nl > 0
		}
	}
	return "", false
}

// Variables describes every live variable, sorted by name.
func (m *Mapping) Variables() []VarInfo {
	if m.mem == nil {
		return nil
	}
	ix := m.index()
	out := make([]VarInfo, 0, len(ix.names))
	var buf []byte
	for name := range ix.names {
		var v uint64
		var err error
		buf, v, err = m.Read(name, buf[:0])
		if err != nil {
			continue
		}
		e := entryOff(m.dirOff, ix.names[name])
		st := u64(m.mem, e+entState).Load()
		c := u64(m.mem, slotOff(e, (st&stateActive)>>1)+8).Load()
		out = append(out, VarInfo{Name: name, Size: uint64(len(buf)), Capacity: c, Version: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names identify the tenant and service the file belongs to.
func (m *Mapping) Names() (tenant, service string) { return headerNames(m.mem) }

// Generation changes whenever a variable is allocated or deallocated.
func (m *Mapping) Generation() uint64 { return u64(m.mem, offGeneration).Load() }

// ChangeSeq is the file's change sequence, bumped after every applied change.
// It is a 32-bit futex word: it wraps.
func (m *Mapping) ChangeSeq() uint32 { return u32(m.mem, offChangeSeq).Load() }

// Size is the number of bytes of the file currently in use by the layout.
func (m *Mapping) Size() int64 { return int64(u64(m.mem, offFileSize).Load()) }

// Close unmaps the file and closes its descriptor. It is safe to call more
// than once.
func (m *Mapping) Close() error {
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
