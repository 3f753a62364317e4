package broker

import "github.com/commy/commy/internal/ipc"

// LoopRequests is how many requests b's event loop has served.
func LoopRequests(b *Broker) uint64 {
	if b.loop == nil {
		return 0
	}
	return b.loop.requests.Load()
}

// LoopAlways makes every session from now on yield to the event loop
// whenever it waits for input, even when no other is busy, so that tests
// know which way their requests go. It returns a function that undoes it.
func LoopAlways() func() {
	old := loopYield
	loopYield = ipc.YieldAlways
	return func() { loopYield = old }
}
