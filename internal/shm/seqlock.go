package shm

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// fence is a process-local word for loadFence.
type fence struct{ w atomic.Uint64 }

// busyTimeout is how long a reader retries a variable that keeps changing
// under it (or whose writer was descheduled mid-publish) before giving up
// with ErrBusy.
const busyTimeout = time.Second

// backoff is called on every retry of a seqlock read: it spins briefly, then
// yields the processor, and reports false once busyTimeout has passed.
// stop, if not nil and set, makes it report false at once (a replaced
// mapping). Declare it with var before the loop: building it inside the
// loop's init statement costs a copy the read path notices.
type backoff struct {
	n     int
	start time.Time
}

func (b *backoff) retry(stop *atomic.Bool) bool {
	b.n++
	if b.n&63 != 0 {
		return true
	}
	if stop != nil && stop.Load() {
		return false
	}
	runtime.Gosched()
	if b.n&1023 == 0 {
		if b.start.IsZero() {
			b.start = time.Now()
		} else if time.Since(b.start) > busyTimeout {
			return false
		}
	}
	return true
}

// slotInfo is what one consistent read of an entry found besides the value.
type slotInfo struct {
	version, capacity uint64
}

// readEntry copies the value of the directory entry at e into dst (grown if it
// is too small) and returns it, after checking that the entry is live and
// named name. dataOff is where the value area starts (validated with the
// header). It never takes a lock: it retries until it copied under an even,
// unchanged sequence number, and gives up with ErrBusy after busyTimeout.
//
// Ordering, per step: the first seq load is an atomic load (acquire), so the
// state, size, slot and value loads after it cannot be satisfied earlier; the
// writer publishes with an atomic read-modify-write (release), so everything
// it wrote before, including a file_size that grew to hold the slot, is
// visible once the even seq is seen. loadFence keeps the value copy before
// the second seq load. If the second load differs from the first, a writer
// published in between (it may then be filling the slot we copied), and the
// copy is discarded. A check that fails with seq unchanged means the file is
// corrupt: every offset is checked against file_size (clamped to the mapping)
// and 64-byte alignment before it is used.
func readEntry(mem []byte, dataOff, e uint64, name string, dst []byte, f *fence, stop *atomic.Bool) ([]byte, slotInfo, error) {
	seq := u64(mem, e+entSeq)
	var b backoff
	for b.retry(stop) {
		s1 := seq.Load() // acquire
		if s1&1 != 0 {
			continue
		}
		// Loaded after s1: a slot published in pages the file grew by is
		// covered. Clamped: the word is in the file, the mapping is ours.
		size := min(u64(mem, offFileSize).Load(), uint64(len(mem)))
		st := u64(mem, e+entState).Load()
		if st&stateLive == 0 {
			if seq.Load() == s1 {
				return dst, slotInfo{}, ErrNotFound
			}
			continue
		}
		nl := uint64(le.Uint16(mem[e+entNameLen:]))
		if nl > MaxNameLen || string(mem[e+entName:e+entName+nl]) != name {
			if seq.Load() == s1 {
				return dst, slotInfo{}, ErrNotFound
			}
			continue
		}
		so := slotOff(e, (st&stateActive)>>1)
		off := u64(mem, so).Load()
		capacity := u64(mem, so+8).Load()
		if !slotInside(off, capacity, dataOff, size) {
			if seq.Load() == s1 {
				return dst, slotInfo{}, fmt.Errorf("%w: variable %q: slot [%d, +%d) outside [%d, %d)", ErrCorrupt, name, off, capacity, dataOff, size)
			}
			continue
		}
		n := u64(mem, off+slotSize).Load()
		ver := u64(mem, off+slotVersion).Load()
		if n > capacity {
			if seq.Load() == s1 {
				return dst, slotInfo{}, fmt.Errorf("%w: variable %q: %d bytes in a slot of %d", ErrCorrupt, name, n, capacity)
			}
			continue
		}
		if uint64(cap(dst)) < n {
			dst = make([]byte, n)
		}
		dst = dst[:n]
		copy(dst, mem[off+SlotHeader:off+SlotHeader+n])
		loadFence(f)
		if seq.Load() == s1 {
			return dst, slotInfo{version: ver, capacity: capacity}, nil
		}
	}
	return dst, slotInfo{}, ErrBusy
}

// slotInside reports whether a slot at off holding capacity value bytes lies
// in [dataOff, size) and is 64-byte aligned (atomic loads of its header need
// 8), without overflowing.
func slotInside(off, capacity, dataOff, size uint64) bool {
	return off >= dataOff && off%Align == 0 && off <= size &&
		SlotHeader <= size-off && capacity <= size-off-SlotHeader
}

// publish makes the entry's state st visible to readers. The two increments
// are atomic read-modify-writes: the first (odd) cannot be reordered after the
// state store or the writes that follow the publication; the second (even)
// cannot be reordered before the slot and value writes that precede it.
func publish(mem []byte, e uint64, st uint64) {
	seq := u64(mem, e+entSeq)
	seq.Add(1)
	u64(mem, e+entState).Store(st)
	seq.Add(1)
}
