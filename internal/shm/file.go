package shm

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"sync/atomic"
	"syscall"
)

// Options size a new service file.
type Options struct {
	// DirCapacity is the number of variables the file can hold (default DefaultDirCap).
	DirCapacity int
	// MaxSize is the size the file may grow to (default DefaultMaxSize). Writers
	// and readers reserve this much address space; pages are only used as the
	// file grows.
	MaxSize int64
}

// DefaultMaxSize is the default maximum size of a service file.
const DefaultMaxSize = 1 << 30

const initialData = 64 << 10

func (o Options) withDefaults() Options {
	if o.DirCapacity <= 0 {
		o.DirCapacity = DefaultDirCap
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	return o
}

// VarInfo describes one variable.
type VarInfo struct {
	Name     string
	Size     uint64
	Capacity uint64
	Version  uint64
}

// File is the broker's writable view of a service file. Read may run
// concurrently with other Reads; every other method needs exclusive access
// (the broker holds its service lock). Clients read through a Mapping.
type File struct {
	f       *os.File
	path    string
	memfd   bool
	mem     []byte // read-write, MaxSize long
	size    uint64
	max     uint64
	dirOff  uint64
	dirCap  int
	dataOff uint64
	dataEnd uint64
	count   int
	index   map[string]int
	free    freeList
	fence   fence
	charge  GrowFunc

	damaged  error       // sticky: the first corruption found at run time
	onDamage func(error) // see OnDamage

	// A wake owed by MarkChanged, paid by WakeWaiters without the lock.
	wakeDue  atomic.Bool
	waited   atomic.Bool                   // the last WakeWaiters woke someone
	wakeWord atomic.Pointer[atomic.Uint32] // the change sequence, set when mapped; nil once closed
}

// GrowFunc is asked before a File grows by n bytes; an error stops the
// growth and is returned by the call that needed it. It is called with -n to
// give back a growth that then failed.
type GrowFunc func(n int64) error

// SetGrowFunc makes every growth of the file ask fn first (nil: none). It
// needs exclusive access, like the other changes.
func (f *File) SetGrowFunc(fn GrowFunc) { f.charge = fn }

// Create makes a new service file at path (mode 0600, failing if it exists)
// for the named tenant and service.
func Create(path, tenant, service string, o Options) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shm: create %s: %w", path, err)
	}
	sf, err := initFile(f, path, false, tenant, service, o)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return sf, nil
}

// CreateMemfd makes a new service in a sealed memfd. Its Path reaches the same
// memory through /proc/<pid>/fd; the memory is gone when the broker exits.
func CreateMemfd(tenant, service string, o Options) (*File, error) {
	f, err := memfdCreate("commy:" + tenant + "/" + service)
	if err != nil {
		return nil, err
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
	sf, err := initFile(f, path, true, tenant, service, o)
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := sealMemfd(f); err != nil {
		sf.Close()
		return nil, err
	}
	return sf, nil
}

func initFile(f *os.File, path string, memfd bool, tenant, service string, o Options) (*File, error) {
	o = o.withDefaults()
	if len(tenant) == 0 || len(tenant) > MaxTenantLen || len(service) == 0 || len(service) > MaxNameLen {
		return nil, ErrInvalidName
	}
	dirOff := uint64(HeaderSize)
	dataOff := alignPage(dirOff + uint64(o.DirCapacity)*EntrySize)
	size := dataOff + initialData
	if uint64(o.MaxSize) < size {
		return nil, fmt.Errorf("shm: max size %d below the initial size %d: %w", o.MaxSize, size, ErrNoSpace)
	}
	if err := reserve(f, 0, size); err != nil {
		return nil, err
	}
	mem, err := mapShared(f, int(o.MaxSize), true)
	if err != nil {
		return nil, err
	}
	copy(mem[offMagic:], Magic)
	le.PutUint32(mem[offVersion:], LayoutVersion)
	le.PutUint32(mem[offHeaderSize:], HeaderSize)
	le.PutUint64(mem[offMaxSize:], uint64(o.MaxSize))
	le.PutUint32(mem[offDirOffset:], uint32(dirOff))
	le.PutUint32(mem[offDirCapacity:], uint32(o.DirCapacity))
	le.PutUint32(mem[offEntrySize:], EntrySize)
	le.PutUint64(mem[offDataOffset:], dataOff)
	le.PutUint64(mem[offDataEnd:], dataOff)
	le.PutUint16(mem[offTenantLen:], uint16(len(tenant)))
	le.PutUint16(mem[offServiceLen:], uint16(len(service)))
	copy(mem[offTenant:], tenant)
	copy(mem[offService:], service)
	u64(mem, offFileSize).Store(size)
	sf := &File{
		f: f, path: path, memfd: memfd, mem: mem, size: size, max: uint64(o.MaxSize),
		dirOff: dirOff, dirCap: o.DirCapacity, dataOff: dataOff, dataEnd: dataOff,
		index: make(map[string]int),
	}
	sf.wakeWord.Store(u32(mem, offChangeSeq))
	return sf, nil
}

func alignPage(n uint64) uint64 { return (n + 4095) &^ 4095 }

// Path is where a process with the right permissions reaches the file.
func (f *File) Path() string { return f.path }

// Size is the current size of the file in bytes.
func (f *File) Size() int64 { return int64(f.size) }

// Len is the number of live variables.
func (f *File) Len() int { return len(f.index) }

// Changes is the number of changes applied to the file since it was made.
func (f *File) Changes() uint64 { return u64(f.mem, offChangeCount).Load() }

// Names identify the tenant and service the file belongs to.
func (f *File) Names() (tenant, service string) { return headerNames(f.mem) }

// Stat returns the file's status (device and inode identify it to the eBPF probe).
func (f *File) Stat() (os.FileInfo, error) { return f.f.Stat() }

// OpenReadOnly returns a new read-only descriptor of the file, for a client.
func (f *File) OpenReadOnly() (*os.File, error) {
	if f.f == nil {
		return nil, ErrClosed
	}
	p := f.path
	if !f.memfd {
		// Reopen through the descriptor, not the name: the name may have been
		// replaced since the file was opened.
		p = fmt.Sprintf("/proc/self/fd/%d", f.f.Fd())
	}
	r, err := os.OpenFile(p, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: reopen read-only: %w", err)
	}
	return r, nil
}

// Has reports whether a live variable has this name.
func (f *File) Has(name string) bool { _, ok := f.index[name]; return ok }

// Damaged is the corruption found in the file at run time, or nil. Once
// damaged, every method that reads or changes values fails with it (matching
// ErrCorrupt); Close and Remove still work.
func (f *File) Damaged() error { return f.damaged }

// OnDamage sets fn to be called, once, when the file is found damaged. It is
// called under the caller's exclusive access, with the error.
func (f *File) OnDamage(fn func(error)) { f.onDamage = fn }

// usable fails if the file was closed or found damaged.
func (f *File) usable() error {
	switch {
	case f.mem == nil:
		return ErrClosed
	case f.damaged != nil:
		return f.damaged
	}
	return nil
}

// guard turns a fault on the mapping (SIGBUS: the file was truncated under
// it) or a runtime error caused by the file's contents into ErrCorrupt, and
// marks the file damaged on ErrCorrupt. Use it as
// defer f.guard(debug.SetPanicOnFault(true), &err).
func (f *File) guard(old bool, err *error) {
	if r := recover(); r != nil {
		re, ok := r.(error)
		if !ok {
			debug.SetPanicOnFault(old)
			panic(r)
		}
		*err = fmt.Errorf("%w: %w", ErrCorrupt, re)
	}
	debug.SetPanicOnFault(old)
	if *err != nil && f.damaged == nil && errors.Is(*err, ErrCorrupt) {
		f.damaged = *err
		if f.onDamage != nil {
			f.onDamage(*err)
		}
	}
}

// corrupt is an ErrCorrupt about entry idx.
func (f *File) corrupt(idx int, format string, args ...any) error {
	return fmt.Errorf("%w: entry %d: %s", ErrCorrupt, idx, fmt.Sprintf(format, args...))
}

// slot returns slot s of entry idx, checked: a slot lies in the allocated
// value area and is aligned, or has capacity 0 (no slot).
func (f *File) slot(idx int, s uint64) (off, c uint64, err error) {
	so := slotOff(entryOff(f.dirOff, idx), s)
	off, c = u64(f.mem, so).Load(), u64(f.mem, so+8).Load()
	if c == 0 {
		return off, 0, nil
	}
	if c%Align != 0 || !slotInside(off, c, f.dataOff, f.dataEnd) {
		return 0, 0, f.corrupt(idx, "slot %d [%d, +%d) outside [%d, %d)", s, off, c, f.dataOff, f.dataEnd)
	}
	return off, c, nil
}

// active returns entry idx's state and its active slot, checked.
func (f *File) active(idx int) (st, act, off, c uint64, err error) {
	st = u64(f.mem, entryOff(f.dirOff, idx)+entState).Load()
	act = (st & stateActive) >> 1
	if off, c, err = f.slot(idx, act); err == nil && c == 0 {
		err = f.corrupt(idx, "no active slot")
	}
	return st, act, off, c, err
}

// Read copies the named value into dst (grown if needed) and returns it with
// its version.
func (f *File) Read(name string, dst []byte) (_ []byte, _ uint64, err error) {
	if err := f.usable(); err != nil {
		return dst, 0, err
	}
	defer f.guard(debug.SetPanicOnFault(true), &err)
	idx, ok := f.index[name]
	if !ok {
		return dst, 0, ErrNotFound
	}
	out, si, err := readEntry(f.mem, f.dataOff, entryOff(f.dirOff, idx), name, dst, &f.fence, nil)
	return out, si.version, err
}

// Info describes the named variable.
func (f *File) Info(name string) (_ VarInfo, err error) {
	if err := f.usable(); err != nil {
		return VarInfo{}, err
	}
	defer f.guard(debug.SetPanicOnFault(true), &err)
	idx, ok := f.index[name]
	if !ok {
		return VarInfo{}, ErrNotFound
	}
	return f.info(idx, name)
}

func (f *File) info(idx int, name string) (VarInfo, error) {
	_, _, off, c, err := f.active(idx)
	if err != nil {
		return VarInfo{}, err
	}
	vi := VarInfo{
		Name:     name,
		Capacity: c,
		Size:     u64(f.mem, off+slotSize).Load(),
		Version:  u64(f.mem, off+slotVersion).Load(),
	}
	if vi.Size > c {
		return VarInfo{}, f.corrupt(idx, "%d bytes in a slot of %d", vi.Size, c)
	}
	return vi, nil
}

// Variables describes every live variable, sorted by name. A damaged file
// lists nothing.
func (f *File) Variables() []VarInfo {
	vs, err := f.variables()
	if err != nil {
		return nil
	}
	return vs
}

func (f *File) variables() (out []VarInfo, err error) {
	if err := f.usable(); err != nil {
		return nil, err
	}
	defer f.guard(debug.SetPanicOnFault(true), &err)
	out = make([]VarInfo, 0, len(f.index))
	for name, idx := range f.index {
		vi, err := f.info(idx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, vi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Allocate creates a variable holding data with room for at least capacity
// bytes, and returns its version (1).
func (f *File) Allocate(name string, data []byte, capacity int) (_ uint64, err error) {
	if err := f.usable(); err != nil {
		return 0, err
	}
	defer f.guard(debug.SetPanicOnFault(true), &err)
	if len(name) == 0 || len(name) > MaxNameLen {
		return 0, ErrInvalidName
	}
	if _, ok := f.index[name]; ok {
		return 0, ErrExists
	}
	c := uint64(max(capacity, len(data), 1))
	c = alignUp(c)
	if slotBytes(c) > f.max-f.dataOff {
		return 0, ErrTooLarge
	}
	idx := -1
	for i := 0; i < f.count; i++ {
		if u64(f.mem, entryOff(f.dirOff, i)+entState).Load()&stateLive == 0 {
			idx = i
			break
		}
	}
	if idx < 0 {
		if f.count >= f.dirCap {
			return 0, fmt.Errorf("shm: directory full (%d variables): %w", f.dirCap, ErrNoSpace)
		}
		idx = f.count
	}
	off, err := f.alloc(slotBytes(c))
	if err != nil {
		return 0, err
	}
	le.PutUint64(f.mem[off+slotSize:], uint64(len(data)))
	le.PutUint64(f.mem[off+slotVersion:], 1)
	copy(f.mem[off+SlotHeader:], data)

	e := entryOff(f.dirOff, idx)
	// The entry is not live: readers skip it, so plain stores are fine. The
	// publish below orders them before the entry becomes visible.
	le.PutUint64(f.mem[e+entSlot0:], off)
	le.PutUint64(f.mem[e+entSlot0+8:], c)
	le.PutUint64(f.mem[e+entSlot1:], 0)
	le.PutUint64(f.mem[e+entSlot1+8:], 0)
	le.PutUint16(f.mem[e+entNameLen:], uint16(len(name)))
	clear(f.mem[e+entName : e+entName+MaxNameLen])
	copy(f.mem[e+entName:], name)
	if idx == f.count {
		f.count++
		u32(f.mem, offEntryCount).Store(uint32(f.count)) // before the entry goes live
	}
	publish(f.mem, e, stateLive)
	f.index[name] = idx
	u64(f.mem, offGeneration).Add(1)
	return 1, nil
}

// Deallocate removes the variable and frees its slots.
func (f *File) Deallocate(name string) (err error) {
	if err := f.usable(); err != nil {
		return err
	}
	defer f.guard(debug.SetPanicOnFault(true), &err)
	idx, ok := f.index[name]
	if !ok {
		return ErrNotFound
	}
	var slots [2]extent
	for s := uint64(0); s < 2; s++ {
		off, c, err := f.slot(idx, s)
		if err != nil {
			return err
		}
		slots[s] = extent{off, c}
	}
	publish(f.mem, entryOff(f.dirOff, idx), 0)
	for _, x := range slots {
		if x.n > 0 {
			f.release(x.off, slotBytes(x.n))
		}
	}
	delete(f.index, name)
	u64(f.mem, offGeneration).Add(1)
	return nil
}

// Write replaces the named value and returns its new version.
func (f *File) Write(name string, data []byte) (uint64, error) {
	v, err := f.WriteBatch([]string{name}, [][]byte{data}, nil)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// WriteBatch replaces several values, all or none: it fails before changing
// anything if a name is unknown or repeated, or the values do not fit. The new
// versions are appended to versions.
func (f *File) WriteBatch(names []string, values [][]byte, versions []uint64) (_ []uint64, err error) {
	if err := f.usable(); err != nil {
		return versions, err
	}
	defer f.guard(debug.SetPanicOnFault(true), &err)
	if len(names) != len(values) {
		return versions, fmt.Errorf("shm: %d names for %d values", len(names), len(values))
	}
	// Find what the batch needs before touching anything: the allocations are
	// tried on a copy of the free list and the rest must fit past the data end.
	var bump uint64
	var sim freeList
	for i, name := range names {
		idx, ok := f.index[name]
		if !ok {
			return versions, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		for _, prev := range names[:i] {
			if prev == name {
				return versions, fmt.Errorf("shm: %q named twice", name)
			}
		}
		if uint64(len(values[i])) > f.max {
			return versions, fmt.Errorf("shm: %d bytes for %q: %w", len(values[i]), name, ErrTooLarge)
		}
		c, grow, err := f.slotNeed(idx, uint64(len(values[i])))
		if err != nil {
			return versions, err
		}
		if grow {
			if sim.ext == nil {
				sim.ext = append([]extent{}, f.free.ext...)
			}
			if _, ok := sim.take(slotBytes(c)); !ok {
				bump += slotBytes(c)
			}
		}
	}
	if bump > 0 {
		if f.dataEnd+bump > f.max {
			return versions, fmt.Errorf("shm: %d more bytes would pass the %d-byte maximum: %w", bump, f.max, ErrNoSpace)
		}
		if err := f.grow(f.dataEnd + bump); err != nil {
			return versions, err
		}
	}
	for i, name := range names {
		v, err := f.write(f.index[name], values[i])
		if err != nil {
			return versions, err
		}
		versions = append(versions, v)
	}
	return versions, nil
}

// slotNeed says whether the inactive slot of entry idx must be replaced to hold
// n bytes, and with what capacity.
func (f *File) slotNeed(idx int, n uint64) (uint64, bool, error) {
	_, act, _, actCap, err := f.active(idx)
	if err != nil {
		return 0, false, err
	}
	_, inCap, err := f.slot(idx, 1-act)
	if err != nil {
		return 0, false, err
	}
	if inCap > 0 && n <= inCap { // no slot (capacity 0) holds even an empty value
		return inCap, false, nil
	}
	c := alignUp(max(n, actCap))
	if n > actCap {
		// Grow geometrically, unless that alone would not fit.
		if g := alignUp(max(n, 2*actCap)); f.dataEnd+slotBytes(g) <= f.max {
			c = g
		}
	}
	return c, true, nil
}

func (f *File) write(idx int, data []byte) (uint64, error) {
	e := entryOff(f.dirOff, idx)
	_, act, actOff, _, err := f.active(idx)
	if err != nil {
		return 0, err
	}
	in := 1 - act
	ver := u64(f.mem, actOff+slotVersion).Load() + 1
	so := slotOff(e, in)
	c, grow, err := f.slotNeed(idx, uint64(len(data)))
	if err != nil {
		return 0, err
	}
	if grow {
		oldOff, oldCap, err := f.slot(idx, in) // checked by slotNeed
		if err != nil {
			return 0, err
		}
		off, err := f.alloc(slotBytes(c))
		if err != nil {
			return 0, err
		}
		if oldCap > 0 {
			f.release(oldOff, slotBytes(oldCap))
		}
		// Offset before capacity: a crash between them leaves the new offset
		// with the old, smaller capacity, which lies inside the new region.
		u64(f.mem, so).Store(off)
		u64(f.mem, so+8).Store(c)
	}
	off := u64(f.mem, so).Load()
	// The inactive slot: a reader may still be copying it from before the last
	// publish, but its second seq load will not match, so it retries.
	le.PutUint64(f.mem[off+slotSize:], uint64(len(data)))
	le.PutUint64(f.mem[off+slotVersion:], ver)
	copy(f.mem[off+SlotHeader:], data)
	publish(f.mem, e, stateLive|in<<1)
	return ver, nil
}

// Changed tells watchers of the file that changes were applied: it bumps the
// change count and the change sequence, and wakes every process waiting on
// the sequence's futex (Mapping.Wait).
func (f *File) Changed() {
	f.MarkChanged()
	f.WakeWaiters()
}

// MarkChanged is Changed without the system call: it counts the change and
// bumps the change sequence, and leaves the wake owed to WakeWaiters, which
// the caller must call once it has released its lock (a waiter that checks
// the sequence after the bump does not sleep; one asleep before it needs the
// wake).
func (f *File) MarkChanged() {
	if f.usable() != nil {
		return
	}
	var err error // a fault marks the file damaged; the caller learns it next time
	defer f.guard(debug.SetPanicOnFault(true), &err)
	u64(f.mem, offChangeCount).Add(1)
	f.bump()
	f.wakeDue.Store(true)
}

// WakeWaiters wakes the processes waiting on the change sequence if a
// MarkChanged since the last WakeWaiters owes them a wake. It needs no lock
// and may run concurrently with anything, Close included: one wake pays for
// every change marked before it, and a wake that races Close goes to an
// address that is no longer mapped, which the kernel refuses (EFAULT) or
// which at worst wakes a futex that must tolerate spurious wakes anyway.
func (f *File) WakeWaiters() {
	if !f.wakeDue.Swap(false) {
		return
	}
	if w := f.wakeWord.Load(); w != nil {
		f.waited.Store(futexWake(w) > 0)
	}
}

// Watched reports whether the last WakeWaiters woke anyone: the file is
// likely to have waiters again, which a caller may wake before it does
// other work.
func (f *File) Watched() bool { return f.waited.Load() }

// bump increments the change sequence (release: what was stored before is
// seen by a waiter that sees the new value) and returns its word.
func (f *File) bump() *atomic.Uint32 {
	seq := u32(f.mem, offChangeSeq)
	seq.Add(1)
	return seq
}

// wake bumps the change sequence and wakes every process waiting on it.
func (f *File) wake() { futexWake(f.bump()) }

// MarkDeleted marks the service deleted in the header, so that every mapped
// reader gets ErrServiceDeleted, and wakes every Wait. The broker calls it
// before Remove: mappings outlive the file's name and descriptor.
func (f *File) MarkDeleted() {
	if f.mem == nil {
		return
	}
	var err error
	defer f.guard(debug.SetPanicOnFault(true), &err)
	u32(f.mem, offFlags).Or(flagDeleted) // release, before the wake
	f.wake()
}

// alloc takes n bytes (a multiple of Align) for a slot, growing the file if
// needed.
func (f *File) alloc(n uint64) (uint64, error) {
	if off, ok := f.free.take(n); ok {
		return off, nil
	}
	off := f.dataEnd
	end := off + n
	if end > f.max || end < off {
		return 0, fmt.Errorf("shm: file would pass its %d-byte maximum: %w", f.max, ErrNoSpace)
	}
	if err := f.grow(end); err != nil {
		return 0, err
	}
	f.dataEnd = end
	u64(f.mem, offDataEnd).Store(end)
	return off, nil
}

func (f *File) release(off, n uint64) { f.free.put(off, n) }

// grow makes the file at least end bytes long, doubling to amortise. The file
// grows before the header says so, so no reader touches a page past the end.
func (f *File) grow(end uint64) error {
	if end <= f.size {
		return nil
	}
	ns := alignPage(max(end, min(2*f.size, f.max)))
	if ns > f.max {
		ns = f.max
	}
	if f.charge != nil {
		err := f.charge(int64(ns - f.size))
		if err != nil && alignPage(end) < ns {
			ns = min(alignPage(end), f.max) // no room to double: take only what is needed
			err = f.charge(int64(ns - f.size))
		}
		if err != nil {
			return err
		}
	}
	if err := reserve(f.f, f.size, ns-f.size); err != nil {
		if f.charge != nil {
			f.charge(-int64(ns - f.size))
		}
		return err
	}
	f.size = ns
	u64(f.mem, offFileSize).Store(ns) // release: readers that see it may use the pages
	return nil
}

// Close unmaps and closes the file. It is safe to call more than once.
func (f *File) Close() error {
	var errs []error
	f.wakeWord.Store(nil)
	if f.mem != nil {
		errs = append(errs, unmap(f.mem))
		f.mem = nil
	}
	if f.f != nil {
		errs = append(errs, f.f.Close())
		f.f = nil
	}
	return errors.Join(errs...)
}

// Remove closes the file and deletes it from the file system (a memfd just
// goes away with its last descriptor and mapping). Mappings held by clients
// stay valid: the file never shrinks.
func (f *File) Remove() error {
	err := f.Close()
	if !f.memfd {
		if rerr := os.Remove(f.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

func headerNames(mem []byte) (string, string) {
	tl := min(int(le.Uint16(mem[offTenantLen:])), MaxTenantLen)
	sl := min(int(le.Uint16(mem[offServiceLen:])), MaxNameLen)
	return string(mem[offTenant : offTenant+tl]), string(mem[offService : offService+sl])
}
