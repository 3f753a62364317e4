package ipc

import (
	"fmt"
	"net"
	"os"

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
func PeerCred(uc *net.UnixConn) (Cred, error) {
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
