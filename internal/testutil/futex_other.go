//go:build !linux

package testutil

import "testing"

// SharedFutexSleepers is 0 where /proc does not say.
func SharedFutexSleepers(pid int) int { return 0 }

// WaitFutexSleepers skips the test: it needs Linux's /proc.
func WaitFutexSleepers(t testing.TB, pid, n int) {
	t.Helper()
	t.Skip("testutil: futex sleepers are read from Linux's /proc")
}
