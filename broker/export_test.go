package broker

import "github.com/commy/commy/internal/ipc"

// LoopRequests is how many requests b's event loops have served.
func LoopRequests(b *Broker) uint64 {
	var n uint64
	for _, l := range b.loops {
		n += l.requests.Load()
	}
	return n
}

// LoopShares is how many requests each of b's event loops has served.
func LoopShares(b *Broker) []uint64 {
	var n []uint64
	for _, l := range b.loops {
		n = append(n, l.requests.Load())
	}
	return n
}

// LoopHandBacks is how many times b's event loops have handed a
// connection back to its reader.
func LoopHandBacks(b *Broker) uint64 {
	var n uint64
	for _, l := range b.loops {
		n += l.handed.Load()
	}
	return n
}

// OnReply runs fn before each reply that owes mapped readers a wake is
// written, after any wake that goes first. Set it before the broker starts;
// the function returned undoes it.
func OnReply(fn func()) func() {
	beforeReply = fn
	return func() { beforeReply = nil }
}

// LoopAlways makes every session from now on yield to the event loop
// whenever it waits for input, even when no other is busy, so that tests
// know which way their requests go. It returns a function that undoes it.
func LoopAlways() func() {
	old := loopYield
	loopYield = ipc.YieldAlways
	return func() { loopYield = old }
}
