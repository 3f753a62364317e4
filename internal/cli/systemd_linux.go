package cli

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// checkListenFD reports whether the inherited descriptor fd is a listening
// AF_UNIX SOCK_STREAM socket, the only kind the broker can serve. It reads
// SO_DOMAIN, SO_TYPE and SO_ACCEPTCONN with getsockopt(2) and neither closes
// nor changes fd.
func checkListenFD(fd int, name string) error {
	what := fmt.Sprintf("fd %d", fd)
	if name != "" {
		what += fmt.Sprintf(" (%q)", name)
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	switch {
	case errors.Is(err, unix.ENOTSOCK):
		return fmt.Errorf("%w: %s is not a socket", errActivation, what)
	case errors.Is(err, unix.EBADF):
		return fmt.Errorf("%w: %s is not open", errActivation, what)
	case err != nil:
		return fmt.Errorf("%w: %s: %w", errActivation, what, os.NewSyscallError("getsockopt", err))
	}
	if domain != unix.AF_UNIX {
		return fmt.Errorf("%w: %s is not a Unix socket (%s)", errActivation, what, familyName(domain))
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", errActivation, what, os.NewSyscallError("getsockopt", err))
	}
	if typ != unix.SOCK_STREAM {
		return fmt.Errorf("%w: %s is a %s socket, want SOCK_STREAM (ListenStream= in the socket unit)", errActivation, what, typeName(typ))
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", errActivation, what, os.NewSyscallError("getsockopt", err))
	}
	if listening == 0 {
		return fmt.Errorf("%w: %s is a connected or unbound socket, not a listening one (Accept=yes in the socket unit?)", errActivation, what)
	}
	return nil
}

func familyName(domain int) string {
	switch domain {
	case unix.AF_INET:
		return "AF_INET"
	case unix.AF_INET6:
		return "AF_INET6"
	case unix.AF_NETLINK:
		return "AF_NETLINK"
	case unix.AF_VSOCK:
		return "AF_VSOCK"
	}
	return fmt.Sprintf("address family %d", domain)
}

func typeName(typ int) string {
	switch typ {
	case unix.SOCK_DGRAM:
		return "SOCK_DGRAM"
	case unix.SOCK_SEQPACKET:
		return "SOCK_SEQPACKET"
	case unix.SOCK_RAW:
		return "SOCK_RAW"
	}
	return fmt.Sprintf("type %d", typ)
}
