package shm

import (
	"context"
	"time"
)

// DefaultWaitSlice bounds one futex sleep of Wait, so that it notices its
// context without a wake.
const DefaultWaitSlice = 50 * time.Millisecond

// Wait blocks until the file's change sequence differs from seq, and returns
// the new value. Pass the value ChangeSeq returned before reading: changes
// made since then return at once. It spins briefly before it sleeps on the
// futex the broker wakes after every change, so a watcher on the same host
// needs no message from the broker. It returns ctx's error when ctx ends
// first, ErrServiceDeleted once the service is deleted, ErrServiceReplaced
// once its file is replaced (the broker wakes waiters then too) and
// ErrInterrupted after Interrupt.
func (m *Mapping) Wait(ctx context.Context, seq uint32) (uint32, error) {
	if m.mem == nil {
		return seq, ErrClosed
	}
	w := u32(m.mem, offChangeSeq)
	for i := 0; i < 200; i++ { // about 10 us: a change that is on its way
		if cur := w.Load(); cur != seq {
			return cur, nil
		}
	}
	for {
		switch {
		case m.interrupted.Load(): // stored before Interrupt's wake
			return seq, ErrInterrupted
		case m.deleted(): // stored before the broker's wake
			return seq, m.goneErr()
		}
		if err := ctx.Err(); err != nil {
			return seq, err
		}
		d := DefaultWaitSlice
		if s := time.Duration(m.waitSlice.Load()); s > 0 {
			d = s
		}
		if dl, ok := ctx.Deadline(); ok {
			d = min(d, time.Until(dl))
		}
		if d > 0 {
			futexWait(w, seq, d)
		}
		if cur := w.Load(); cur != seq {
			return cur, nil
		}
	}
}

// Interrupt makes every Wait on m, sleeping or to come, return
// ErrInterrupted; reads are not affected. It is for a mapping that was
// replaced by one of another file, whose change sequence nobody bumps again.
// It is safe to call concurrently with Wait, and more than once.
func (m *Mapping) Interrupt() {
	if m.mem == nil {
		return
	}
	m.interrupted.Store(true)
	// FUTEX_WAKE needs no write access: a read-only mapping can wake its own
	// waiters (and, harmlessly, other processes waiting on the same file).
	futexWake(u32(m.mem, offChangeSeq))
}
