package shm

import (
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Futex operations; they correspond to FUTEX_WAIT and FUTEX_WAKE in
// <linux/futex.h>, which x/sys/unix does not export.
const (
	opFutexWait = 0
	opFutexWake = 1
)

// futexWake wraps futex(2) FUTEX_WAKE on a word of a shared mapping (not
// FUTEX_PRIVATE: waiters are other processes), waking every waiter, and
// returns how many it woke. It never blocks, so it is made as a raw system
// call, without the runtime's syscall hand-off.
func futexWake(w *atomic.Uint32) int {
	n, _, errno := unix.RawSyscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), opFutexWake, uintptr(1<<31-1), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

// futexWait wraps futex(2) FUTEX_WAIT: it sleeps while *w == val, for at most
// d. Spurious and early returns are normal; the caller checks the word again.
func futexWait(w *atomic.Uint32, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), opFutexWait, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}
