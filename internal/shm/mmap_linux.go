package shm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapShared wraps mmap(2) with MAP_SHARED over length bytes of f, which may
// pass the end of the file: pages past it are only touched once the file has
// grown to cover them.
func mapShared(f *os.File, length int, writable bool) ([]byte, error) {
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, length, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: %w", os.NewSyscallError("mmap", err))
	}
	return mem, nil
}

// reserveZero wraps mmap(2) of length bytes of private, read-only zero pages
// (MAP_NORESERVE: they take address space, not memory): room a Space maps
// files over.
func reserveZero(length int) ([]byte, error) {
	mem, err := unix.Mmap(-1, 0, length, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("shm: %w", os.NewSyscallError("mmap", err))
	}
	return mem, nil
}

// mapFixed wraps mmap(2) with MAP_FIXED: it maps f (or, if f is nil, zero
// pages) read-only over mem, replacing what was there in one step, so that a
// concurrent reader of mem sees the old pages or the new ones, never a hole.
func mapFixed(f *os.File, mem []byte) error {
	fd, flags := -1, unix.MAP_FIXED|unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE
	if f != nil {
		fd, flags = int(f.Fd()), unix.MAP_FIXED|unix.MAP_SHARED
	}
	_, err := unix.MmapPtr(fd, 0, unsafe.Pointer(unsafe.SliceData(mem)), uintptr(len(mem)), unix.PROT_READ, flags)
	runtime.KeepAlive(f)
	if err != nil {
		return fmt.Errorf("shm: %w", os.NewSyscallError("mmap", err))
	}
	return nil
}

// unmap wraps munmap(2).
func unmap(mem []byte) error {
	return os.NewSyscallError("munmap", unix.Munmap(mem))
}

// reserve wraps fallocate(2): it gives the file real blocks for [off, off+n),
// growing it, so that a full disk is an error here and never a SIGBUS when the
// broker later writes through its mapping.
func reserve(f *os.File, off, n uint64) error {
	if n == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, int64(off), int64(n))
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = unix.Ftruncate(int(f.Fd()), int64(off+n))
	}
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EFBIG) {
		return fmt.Errorf("shm: grow to %d bytes: %w: %w", off+n, ErrNoSpace, err)
	}
	if err != nil {
		return fmt.Errorf("shm: grow to %d bytes: %w", off+n, os.NewSyscallError("fallocate", err))
	}
	return nil
}

// memfdCreate wraps memfd_create(2) with sealing allowed, and makes the memfd
// 0600 so that no other user can reopen it through /proc.
func memfdCreate(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: %w", os.NewSyscallError("memfd_create", err))
	}
	if err := unix.Fchmod(fd, 0o600); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: %w", os.NewSyscallError("fchmod", err))
	}
	return os.NewFile(uintptr(fd), name), nil
}

// sealMemfd adds F_SEAL_SHRINK (no reader ever takes SIGBUS) and
// F_SEAL_FUTURE_WRITE (no new writable mapping or write(2), even through a
// descriptor reopened read-write), then F_SEAL_SEAL. The broker keeps writing
// through the mapping it made before, and may still grow the file.
func sealMemfd(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_FUTURE_WRITE|unix.F_SEAL_SEAL)
	if err != nil {
		return fmt.Errorf("shm: seal memfd: %w", os.NewSyscallError("fcntl", err))
	}
	return nil
}

// cannotShrink reports whether f is sealed with F_SEAL_SHRINK (a memfd of the
// memfd backend), so that a mapping of it can never fault.
func cannotShrink(f *os.File) bool {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	return err == nil && seals&unix.F_SEAL_SHRINK != 0
}

// checkMemfd fails unless f is a memfd that allows sealing: F_GET_SEALS
// fails on anything else.
func checkMemfd(f *os.File) error {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil {
		return fmt.Errorf("not a sealable memfd: %w", os.NewSyscallError("fcntl", err))
	}
	return nil
}
