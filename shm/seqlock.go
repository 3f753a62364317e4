package shm

import (
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
type backoff struct {
	n     int
	start time.Time
}

func (b *backoff) retry() bool {
	b.n++
	if b.n&63 != 0 {
		return true
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

// readEntry copies the value of the directory entry at e into dst (grown if it
// is too small) and returns it with its version, after checking that the entry
// is live and named name. size is the readable length of mem. It never takes a
// lock: it retries until it copied under an even, unchanged sequence number.
//
// Ordering, per step: the first seq load is an atomic load (acquire), so the
// state, slot and value loads after it cannot be satisfied earlier; the writer
// publishes with an atomic read-modify-write (release), so everything it wrote
// before is visible once the even seq is seen. loadFence keeps the value copy
// before the second seq load. If the second load differs from the first, a
// writer published in between (it may then be filling the slot we copied), and
// the copy is discarded.
func readEntry(mem []byte, size uint64, e uint64, name string, dst []byte, f *fence) ([]byte, uint64, error) {
	seq := u64(mem, e+entSeq)
	for b := (backoff{}); b.retry(); {
		s1 := seq.Load() // acquire
		if s1&1 != 0 {
			continue
		}
		st := u64(mem, e+entState).Load()
		if st&stateLive == 0 {
			return dst, 0, ErrNotFound
		}
		nl := uint64(le.Uint16(mem[e+entNameLen:]))
		if nl > MaxNameLen || string(mem[e+entName:e+entName+nl]) != name {
			if seq.Load() == s1 {
				return dst, 0, ErrNotFound
			}
			continue
		}
		so := slotOff(e, (st&stateActive)>>1)
		off := u64(mem, so).Load()
		capacity := u64(mem, so+8).Load()
		if off+SlotHeader+capacity > size || off+SlotHeader+capacity < off {
			if seq.Load() == s1 {
				return dst, 0, ErrCorrupt
			}
			continue
		}
		n := u64(mem, off+slotSize).Load()
		ver := u64(mem, off+slotVersion).Load()
		if n > capacity {
			if seq.Load() == s1 {
				return dst, 0, ErrCorrupt
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
			return dst, ver, nil
		}
	}
	return dst, 0, ErrBusy
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
