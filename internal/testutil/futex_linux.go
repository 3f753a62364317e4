package testutil

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// opFutexWait is FUTEX_WAIT without FUTEX_PRIVATE_FLAG (<linux/futex.h>):
// the wait on a shared mapping that shm.Mapping.Wait makes. The Go runtime
// only makes private futex calls, so a thread in this one is a Wait.
const opFutexWait = 0

// SharedFutexSleepers counts the threads of process pid that are asleep in
// futex(2) FUTEX_WAIT on a shared word, from /proc/<pid>/task/*/syscall and
// stat (needs ptrace access to pid: the same user, or root).
func SharedFutexSleepers(pid int) int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*")
	n := 0
	for _, task := range tasks {
		sc, err := os.ReadFile(task + "/syscall")
		if err != nil {
			continue
		}
		// "<nr> <arg1> <arg2> ..." with hex args while in a system call.
		f := strings.Fields(string(sc))
		if len(f) < 3 || f[0] != strconv.Itoa(unix.SYS_FUTEX) {
			continue
		}
		if op, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 64); err != nil || op != opFutexWait {
			continue
		}
		st, err := os.ReadFile(task + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) S ...": the state follows the last ')'.
		if i := strings.LastIndexByte(string(st), ')'); i >= 0 && strings.HasPrefix(string(st[i+1:]), " S") {
			n++
		}
	}
	return n
}

// WaitFutexSleepers waits until at least n threads of pid sleep on a shared
// futex (see SharedFutexSleepers), so that a test wakes a waiter that is
// really in the kernel rather than one still on its way there.
func WaitFutexSleepers(t testing.TB, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for SharedFutexSleepers(pid) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %d threads of pid %d asleep on a shared futex", n, pid)
		}
		time.Sleep(time.Millisecond)
	}
}
