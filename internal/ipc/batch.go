package ipc

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// SendBatch writes frames to many connections, each as TryWrite would:
// whole and at once, or not at all when the connection is busy writing or
// its socket has no room. Where the kernel offers io_uring, the writes to
// InputPolled sockets go out together, up to ringEntries in one system
// call; otherwise, and for other sockets, it calls TryWrite for each.
//
// The zero value is ready to use; one goroutine uses it at a time.
type SendBatch struct {
	// Sendto makes the batch write one connection at a time, never through
	// io_uring.
	Sendto bool

	items []batchItem
	fds   []int
	bufs  [][]byte
	res   []int32
	slot  []int // the item of each send in the ring
}

type batchItem struct {
	c    *Conn
	p    []byte
	h    holder // set while c's descriptor is held
	ok   bool
	err  error
	done bool
}

// holder is a Socket whose descriptor a SendBatch may hold open.
type holder interface {
	hold() (int, bool)
	release()
}

// Add queues p (whole frames) for c. p must not change until Flush returns.
func (b *SendBatch) Add(c *Conn, p []byte) {
	b.items = append(b.items, batchItem{c: c, p: p})
}

// Flush makes the queued writes and calls fn for each, in the order they
// were added, with what TryWrite would have reported; then the batch is
// empty.
func (b *SendBatch) Flush(fn func(i int, ok bool, err error)) {
	var r *ring
	if !b.Sendto {
		r = takeRing()
	}
	for start := 0; start < len(b.items); start += ringEntries {
		items := b.items[start:min(start+ringEntries, len(b.items))]
		if r != nil {
			r = b.send(r, items)
		}
		for i := range items {
			if it := &items[i]; !it.done {
				it.ok, it.err = it.c.TryWrite(it.p)
			}
		}
	}
	if r != nil {
		putRing(r)
	}
	for i, it := range b.items {
		fn(i, it.ok, it.err)
	}
	clear(b.items)
	b.items = b.items[:0]
}

// send writes items through r and marks those it handled done. It returns r,
// or nil if r failed and is closed.
func (b *SendBatch) send(r *ring, items []batchItem) *ring {
	b.fds, b.bufs, b.slot = b.fds[:0], b.bufs[:0], b.slot[:0]
	for i := range items {
		it := &items[i]
		h, ok := it.c.sk.(holder)
		if !ok || len(it.p) == 0 || len(it.p) > MaxTryWrite {
			continue // TryWrite's
		}
		if !it.c.wmu.TryLock() {
			it.done = true // busy: written the blocking way
			continue
		}
		fd, open := h.hold()
		if !open { // closed, or closing: TryWrite's
			it.c.wmu.Unlock()
			continue
		}
		it.h = h
		it.c.refreshDeadlineLocked()
		b.fds, b.bufs, b.slot = append(b.fds, fd), append(b.bufs, it.p), append(b.slot, i)
	}
	if len(b.fds) == 0 {
		return r
	}
	if cap(b.res) < len(b.fds) {
		b.res = make([]int32, ringEntries)
	}
	res := b.res[:len(b.fds)]
	if beforeSubmit != nil {
		beforeSubmit()
	}
	err := r.sendAll(b.fds, b.bufs, res)
	for _, i := range b.slot {
		items[i].h.release()
		items[i].h = nil
	}
	if err != nil {
		r.close()
		uringFailed(err)
		r = nil
	}
	sent := 0
	for k, i := range b.slot {
		it := &items[i]
		it.done = true
		switch n := res[k]; {
		case n >= int32(len(it.p)):
			it.ok = true
			sent++
		case n >= 0:
			it.ok, it.err = true, it.c.writeLocked(it.p[n:], nil)
			sent++
		case n == -int32(unix.EAGAIN):
		case n == -int32(unix.EINVAL) || n == -int32(unix.EOPNOTSUPP):
			// The kernel has io_uring but not this operation: one sendto
			// each, from now on.
			uringFailed(os.NewSyscallError("io_uring send", syscall.Errno(-n)))
			it.done = false
		case n == -int32(unix.EINPROGRESS):
			// Left in flight by a failed ring: the connection cannot be
			// trusted to carry whole frames any more.
			it.err = errRingBroken
		default:
			it.err = os.NewSyscallError("send", syscall.Errno(-n))
		}
		it.c.wmu.Unlock()
	}
	uringSends.Add(uint64(sent))
	return r
}

// ringEntries is the most sends one io_uring_enter makes.
const ringEntries = 256

// maxRings bounds the instances kept, one per goroutine sending or reading
// at once (a broker's event loops, and its writers fanning out at the same
// time): twice the CPUs the process runs on, and at least 4. A batch that
// finds them all in use makes one system call per connection.
func maxRings() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

var rings struct {
	mu   sync.Mutex
	free []*ring
	made int
	err  error // why io_uring is not used, once it failed
}

// setupRing is newRing, and beforeSubmit runs between holding the
// sockets and sending, but for tests.
var (
	setupRing    = newRing
	beforeSubmit func()
)

// uringSends and uringRecvs count the writes and reads made through
// io_uring.
var uringSends, uringRecvs atomic.Uint64

// IOURingSends is how many writes SendBatch has made through io_uring in
// this process.
func IOURingSends() uint64 { return uringSends.Load() }

// IOURingRecvs is how many reads ReadBatch has made through io_uring in
// this process.
func IOURingRecvs() uint64 { return uringRecvs.Load() }

// takeRing returns an instance to use, or nil where io_uring is off or all
// maxRings are in use.
func takeRing() *ring {
	rings.mu.Lock()
	defer rings.mu.Unlock()
	if rings.err != nil {
		return nil
	}
	if n := len(rings.free); n > 0 {
		r := rings.free[n-1]
		rings.free = rings.free[:n-1]
		return r
	}
	if rings.made >= maxRings() {
		return nil
	}
	r, err := setupRing(ringEntries)
	if err != nil {
		if rings.made == 0 {
			rings.err = err // the kernel refuses io_uring
		}
		return nil // else a limit (RLIMIT_MEMLOCK before Linux 5.12): the ones made still serve
	}
	rings.made++
	return r
}

func putRing(r *ring) {
	rings.mu.Lock()
	defer rings.mu.Unlock()
	if rings.err != nil {
		r.close()
		rings.made--
		return
	}
	rings.free = append(rings.free, r)
}

// uringFailed turns io_uring off for the process.
func uringFailed(err error) {
	rings.mu.Lock()
	defer rings.mu.Unlock()
	if rings.err == nil {
		rings.err = err
	}
	for _, r := range rings.free {
		r.close()
		rings.made--
	}
	rings.free = nil
}

// IOURing reports whether SendBatch uses io_uring: nil if it does (setting
// up the first instance if none is), else why not.
func IOURing() error {
	r := takeRing()
	if r == nil {
		rings.mu.Lock()
		defer rings.mu.Unlock()
		if rings.err == nil {
			return nil // all in use
		}
		return rings.err
	}
	putRing(r)
	return nil
}
