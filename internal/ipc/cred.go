package ipc

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cred is who the kernel says is at the other end of a socket.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerCred wraps getsockopt(2) SO_PEERCRED: the credentials of the process
// that connected, as they were when it called connect(2).
func PeerCred(uc syscall.Conn) (Cred, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("ipc: peer credentials: %w", err)
	}
	var uc2 *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		uc2, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("ipc: peer credentials: %w", err)
	}
	if serr != nil {
		return Cred{}, fmt.Errorf("ipc: peer credentials: %w", os.NewSyscallError("getsockopt", serr))
	}
	return Cred{PID: uc2.Pid, UID: uc2.Uid, GID: uc2.Gid}, nil
}

// ErrNotSupported means the kernel lacks a socket option (SO_PEERGROUPS
// before Linux 4.13, SO_PEERPIDFD before 6.5).
var ErrNotSupported = errors.New("ipc: not supported by this kernel")

// PeerGroups wraps getsockopt(2) SO_PEERGROUPS: the supplementary groups of
// the process that connected, as they were when it called connect(2). It
// returns an error matching ErrNotSupported on kernels without it.
func PeerGroups(uc syscall.Conn) ([]uint32, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ipc: peer groups: %w", err)
	}
	n := 64
	for {
		buf := make([]uint32, n)
		size := uint32(n * 4)
		var errno unix.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
				uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		}); err != nil {
			return nil, fmt.Errorf("ipc: peer groups: %w", err)
		}
		switch {
		case errno == 0:
			return buf[:size/4], nil
		case errno == unix.ERANGE && int(size/4) > n: // the kernel says how many there are
			n = int(size / 4)
		case errno == unix.ENOPROTOOPT:
			return nil, fmt.Errorf("%w: SO_PEERGROUPS", ErrNotSupported)
		default:
			return nil, fmt.Errorf("ipc: peer groups: %w", os.NewSyscallError("getsockopt", errno))
		}
	}
}

// PeerPidfd wraps getsockopt(2) SO_PEERPIDFD: a pidfd of the process that
// connected, which, unlike its pid, can never name another process. It
// returns an error matching ErrNotSupported on kernels without it.
func PeerPidfd(uc syscall.Conn) (*os.File, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ipc: peer pidfd: %w", err)
	}
	var pidfd int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		pidfd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return nil, fmt.Errorf("ipc: peer pidfd: %w", err)
	}
	if errors.Is(serr, unix.ENOPROTOOPT) {
		return nil, fmt.Errorf("%w: SO_PEERPIDFD", ErrNotSupported)
	}
	if serr != nil {
		return nil, fmt.Errorf("ipc: peer pidfd: %w", os.NewSyscallError("getsockopt", serr))
	}
	return os.NewFile(uintptr(pidfd), "pidfd"), nil
}

// PidfdAlive wraps pidfd_send_signal(2) with signal 0: whether the process
// behind pidfd has not exited, so that its pid still names it.
func PidfdAlive(pidfd *os.File) bool {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), 0, nil, 0) }); err != nil {
		return false
	}
	return serr == nil
}
