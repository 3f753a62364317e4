package ipc

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls below never wait, so they are made raw: the runtime does not
// hand the goroutine's P to another thread around them, which on a busy
// machine costs more than the call (and keeps the runtime's monitor polling
// at its fastest rate). They are for an event loop outside this package
// that owns its descriptors, as commy bench's load generator does.

// Recvfrom wraps recvfrom(2) with MSG_DONTWAIT: it reads what fd holds
// into b, or fails with EAGAIN when it holds nothing.
func Recvfrom(fd int, b []byte) (int, error) {
	n, errno := recvfrom(uintptr(fd), b)
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

func recvfrom(fd uintptr, b []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}

// Sendto wraps sendto(2) with MSG_DONTWAIT and MSG_NOSIGNAL: it writes
// what fd's socket takes of b now, or fails with EAGAIN when it has no room.
func Sendto(fd int, b []byte) (int, error) {
	n, errno := sendto(uintptr(fd), b)
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// sendto sends p without waiting for room (MSG_DONTWAIT) and without
// SIGPIPE.
func sendto(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	return int(n), errno
}

// EpollPwait wraps epoll_pwait(2) with a timeout of 0: the events of the
// epoll instance ep ready now, into evs.
func EpollPwait(ep int, evs []unix.EpollEvent) (int, error) {
	n, errno := epollPwait(uintptr(ep), evs)
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

func epollPwait(ep uintptr, evs []unix.EpollEvent) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, ep, uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	return int(n), errno
}
