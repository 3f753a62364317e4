package shm

// loadFence orders the plain loads of a value copy before the atomic load of
// the seqlock that follows it. On amd64 (TSO) loads are not reordered with
// other loads, and the Go compiler does not move memory operations across an
// atomic load, so nothing needs to be emitted.
func loadFence(*fence) {}
