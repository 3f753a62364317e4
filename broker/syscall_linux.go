package broker

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	syscallEMFILE = syscall.EMFILE
	syscallENFILE = syscall.ENFILE
)

// markerFD is an empty memfd, stored only for its name.
func markerFD(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
