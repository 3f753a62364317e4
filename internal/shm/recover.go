package shm

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"syscall"
)

// Open opens an existing service file for the broker and repairs what a crash
// can leave: an entry whose seqlock is odd (its state word is still either the
// old or the new value, both complete), a replaced slot whose descriptor was
// half written, and space the header did not record. Every value that was
// published, and so every write the broker acknowledged, is kept. It then
// bumps generation and change_seq and wakes waiters, so that mapped readers
// drop indexes built before the repair and watchers look at changes that were
// published but not announced. A file marked deleted fails with
// ErrServiceDeleted: the broker died between marking and removing it.
func Open(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0) // never a link someone put in its place
	if err != nil {
		return nil, fmt.Errorf("shm: open %s: %w", path, err)
	}
	sf, err := open(f, path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: open %s: %w", path, err)
	}
	return sf, nil
}

// RestoreMemfd copies the service held by src, a memfd made by CreateMemfd
// in an earlier broker process (typically kept for it in systemd's file
// descriptor store), into a new sealed memfd, and repairs the copy as Open
// does. src is only read, so it may be a read-only descriptor; it is neither
// changed nor closed. A copy is needed because a memfd sealed against future
// writes can never be mapped writable again.
func RestoreMemfd(src *os.File) (*File, error) {
	sf, err := restoreMemfd(src)
	if err != nil {
		return nil, fmt.Errorf("shm: restore memfd %s: %w", src.Name(), err)
	}
	return sf, nil
}

func restoreMemfd(src *os.File) (*File, error) {
	if err := checkMemfd(src); err != nil {
		return nil, err
	}
	page, _, size, err := readHeader(src)
	if err != nil {
		return nil, err
	}
	tenant, service := headerNames(page)
	dst, err := memfdCreate("commy:" + tenant + "/" + service)
	if err != nil {
		return nil, err
	}
	sf, err := func() (*File, error) {
		if err := reserve(dst, 0, size); err != nil {
			return nil, err
		}
		buf := make([]byte, 1<<20)
		if _, err := io.CopyBuffer(io.NewOffsetWriter(dst, 0), io.NewSectionReader(src, 0, int64(size)), buf); err != nil {
			return nil, fmt.Errorf("copy: %w", err)
		}
		sf, err := open(dst, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), dst.Fd()))
		if err != nil {
			return nil, err
		}
		sf.memfd = true
		if err := sealMemfd(dst); err != nil {
			unmap(sf.mem)
			return nil, err
		}
		return sf, nil
	}()
	if err != nil {
		dst.Close()
		return nil, err
	}
	return sf, nil
}

// readHeader reads and checks the header page of f. size is how much of f
// holds service data: its length in whole pages, up to the header's maximum.
// The file may have grown before a crash kept the header from saying so.
func readHeader(f *os.File) (page []byte, h header, size uint64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, h, 0, err
	}
	page = make([]byte, HeaderSize)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, HeaderSize), page); err != nil {
		return nil, h, 0, fmt.Errorf("%w: short header: %w", ErrCorrupt, err)
	}
	if h, err = parseHeader(page, uint64(fi.Size())); err != nil {
		return nil, h, 0, err
	}
	return page, h, min(uint64(fi.Size()), h.maxSize) &^ 4095, nil
}

func open(f *os.File, path string) (*File, error) {
	_, h, size, err := readHeader(f)
	if err != nil {
		return nil, err
	}
	mem, err := mapShared(f, int(h.maxSize), true)
	if err != nil {
		return nil, err
	}
	sf := &File{
		f: f, path: path, mem: mem, size: size, max: h.maxSize,
		dirOff: h.dirOff, dirCap: h.dirCap, dataOff: h.dataOff,
		index: make(map[string]int),
	}
	sf.wakeWord.Store(u32(mem, offChangeSeq))
	if err := sf.repairGuarded(h); err != nil {
		unmap(mem)
		return nil, err
	}
	return sf, nil
}

// repairGuarded is repair with a fault (the file is shorter than its pages
// claim) turned into ErrCorrupt.
func (f *File) repairGuarded(h header) (err error) {
	defer guardFault(debug.SetPanicOnFault(true), &err)
	if u32(f.mem, offFlags).Load()&flagDeleted != 0 {
		return ErrServiceDeleted
	}
	if err := f.repair(h); err != nil {
		return err
	}
	// A replaced mark belongs to the file's old readers, not to a copy or
	// a restart.
	u32(f.mem, offFlags).And(^uint32(flagReplaced))
	// Readers may hold an index built while an entry was mid-change, and a
	// change may have been published but not announced.
	u64(f.mem, offGeneration).Add(1)
	f.wake()
	return nil
}

func (f *File) repair(h header) error {
	type used struct {
		extent
		idx, slot int
	}
	var ext []used
	count := h.entryCount
	for i := 0; i < f.dirCap; i++ {
		e := entryOff(f.dirOff, i)
		seq := u64(f.mem, e+entSeq)
		if s := seq.Load(); s&1 != 0 {
			seq.Add(1)
		}
		st := u64(f.mem, e+entState).Load()
		if st&stateLive == 0 {
			continue
		}
		count = max(count, i+1)
		nl := uint64(le.Uint16(f.mem[e+entNameLen:]))
		if nl == 0 || nl > MaxNameLen {
			return fmt.Errorf("%w: entry %d: name length %d", ErrCorrupt, i, nl)
		}
		name := string(f.mem[e+entName : e+entName+nl])
		if _, dup := f.index[name]; dup {
			return fmt.Errorf("%w: variable %q twice", ErrCorrupt, name)
		}
		f.index[name] = i
		act := int((st & stateActive) >> 1)
		for s := 0; s < 2; s++ {
			so := slotOff(e, uint64(s))
			off, c := u64(f.mem, so).Load(), u64(f.mem, so+8).Load()
			ok := c > 0 && off >= f.dataOff && off%Align == 0 && c%Align == 0 &&
				off+slotBytes(c) <= f.size && off+slotBytes(c) > off
			if ok && s == act && u64(f.mem, off+slotSize).Load() > c {
				ok = false
			}
			switch {
			case ok:
				ext = append(ext, used{extent{off, slotBytes(c)}, i, s})
			case s == act:
				return fmt.Errorf("%w: variable %q: active slot [%d, +%d)", ErrCorrupt, name, off, c)
			default:
				// A slot readers do not use, caught half replaced: forget it.
				u64(f.mem, so).Store(0)
				u64(f.mem, so+8).Store(0)
			}
		}
	}
	sort.Slice(ext, func(i, j int) bool { return ext[i].off < ext[j].off })
	end := f.dataOff
	for i := range ext {
		u := ext[i]
		if u.off < end {
			if u.slot == int((u64(f.mem, entryOff(f.dirOff, u.idx)+entState).Load()&stateActive)>>1) {
				return fmt.Errorf("%w: slots overlap at %d", ErrCorrupt, u.off)
			}
			so := slotOff(entryOff(f.dirOff, u.idx), uint64(u.slot))
			u64(f.mem, so).Store(0)
			u64(f.mem, so+8).Store(0)
			continue
		}
		if u.off > end {
			f.free.put(end, u.off-end)
		}
		end = u.off + u.n
	}
	f.dataEnd = end
	f.count = count
	u64(f.mem, offDataEnd).Store(end)
	u32(f.mem, offEntryCount).Store(uint32(count))
	if u64(f.mem, offFileSize).Load() < f.size {
		u64(f.mem, offFileSize).Store(f.size)
	}
	return nil
}
