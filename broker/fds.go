package broker

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/commy/commy/internal/ipc"
	"golang.org/x/sys/unix"
)

// DefaultFDReserve is how many descriptors the broker keeps for accepting
// root's connections, GetServiceFilePath and its own files.
const DefaultFDReserve = 64

const limitDescriptors = "descriptors"

// RaiseFileLimit wraps setrlimit(2): it raises the soft RLIMIT_NOFILE of the
// process to the hard limit and returns the new soft limit.
func RaiseFileLimit() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, os.NewSyscallError("getrlimit", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return 0, os.NewSyscallError("setrlimit", err)
		}
	}
	return rl.Cur, nil
}

// fdBudget estimates the broker's descriptors: those open when it started,
// fdsPerConnection per connection and one per service file. Transient ones
// (a file passed by GetServiceFilePath, the audit log, a listener) come out
// of the reserve.
type fdBudget struct {
	limit    int64 // soft RLIMIT_NOFILE
	reserve  int64
	base     int64
	services atomic.Int64
	warned   atomic.Int64 // the minute the last warning was logged
}

// initFDs raises the descriptor limit and measures what is open.
func (b *Broker) initFDs() {
	limit, err := RaiseFileLimit()
	if err != nil {
		b.log.Warn("cannot raise the descriptor limit", "err", err)
		var rl unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
		limit = rl.Cur
	}
	b.fds.limit = int64(min(limit, 1<<40))
	b.fds.reserve = int64(b.cfg.FDReserve)
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		b.fds.base = int64(len(ents))
	}
}

// fdsPerConnection is what a connection may hold: its socket, the epoll
// instance through which the runtime polls it, and a second one while a
// write waits for room (see ipc.InputPolled). Counting the third for every
// connection keeps clients that stop reading from taking descriptors the
// estimate does not know of.
const fdsPerConnection = 3

// fdsUsed is the estimate of descriptors held, with conns connections.
func (b *Broker) fdsUsed(conns int) int64 {
	return b.fds.base + fdsPerConnection*int64(conns) + b.fds.services.Load()
}

// Who takes a descriptor: each may go deeper into the reserve than the one
// before, so that creations can never starve connections, nor connections
// the files GetServiceFilePath passes.
const (
	fdCreate     = iota // a service file: never into the reserve
	fdConnection        // an unprivileged connection: half of it
	fdPrivileged        // root's or the broker uid's connection: three quarters
)

// fdRoom reports whether who may take what it needs (a connection's
// descriptors, or a service file's), warning when fewer than a tenth are
// left.
func (b *Broker) fdRoom(conns int, who int) error {
	used, limit := b.fdsUsed(conns), b.fds.limit
	if limit-used < limit/10 {
		if now := time.Now().Unix() / 60; b.fds.warned.Swap(now) != now {
			b.log.Warn("close to the descriptor limit", "open", used, "limit", limit, "reserve", b.fds.reserve)
		}
	}
	keep, need := b.fds.reserve, int64(fdsPerConnection)
	switch who {
	case fdCreate:
		need = 1
	case fdConnection:
		keep /= 2
	case fdPrivileged:
		keep /= 4
	}
	if used+need > limit-keep {
		return fmt.Errorf("%w: %s: the broker holds %d of %d, %d kept in reserve", ipc.ErrQuotaExceeded, limitDescriptors, used, limit, keep)
	}
	return nil
}

// checkDescriptors refuses a new service that would eat the reserve.
func (b *Broker) checkDescriptors() error {
	b.smu.Lock()
	conns := len(b.sessions)
	b.smu.Unlock()
	if err := b.fdRoom(conns, fdCreate); err != nil {
		b.stats.fdRefused.Add(1)
		return err
	}
	return nil
}

// FDUsage is the broker's estimate of its open descriptors and its limit.
func (b *Broker) FDUsage() (open, limit, reserve int64) {
	b.smu.Lock()
	conns := len(b.sessions)
	b.smu.Unlock()
	return b.fdsUsed(conns), b.fds.limit, b.fds.reserve
}
