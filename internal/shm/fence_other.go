//go:build !amd64

package shm

// loadFence orders the plain loads of a value copy before the atomic load of
// the seqlock that follows it. On weakly ordered CPUs (arm64) a load-acquire
// does not keep earlier plain loads before it, so an atomic read-modify-write
// (acquire and release) on a process-local word stands in for a read barrier.
func loadFence(f *fence) { f.w.Add(0) }
