package ipc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Stream reads and writes the bytes of a Unix stream socket the way Conn
// does, with system calls that cannot block made raw and a wait in the
// runtime's poller only when one would, for a protocol that is not framed
// (the load generator speaks Redis's with it, so that both systems it
// measures are driven through the same code). One goroutine may read and
// one write at a time.
type Stream struct {
	uc     *net.UnixConn
	rc     syscall.RawConn
	rp     []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool
	snd    sender
}

// NewStream wraps uc.
func NewStream(uc *net.UnixConn) (*Stream, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ipc: %w", err)
	}
	s := &Stream{uc: uc, rc: rc}
	s.readFn = s.recv
	s.snd.init()
	return s, nil
}

// Read reads what the socket holds, up to len(p) bytes, waiting for
// something when it holds nothing.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rp = p
	err := s.rc.Read(s.readFn)
	s.rp = nil
	if err == nil {
		err = s.rerr
	}
	switch {
	case errors.Is(err, net.ErrClosed):
		return 0, ErrClosed
	case err != nil:
		return 0, err
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

// recv is the poller callback for Read: one recvfrom(2) that does not wait.
func (s *Stream) recv(fd uintptr) bool {
	n, errno := recvfrom(fd, s.rp)
	if errno == unix.EAGAIN || errno == unix.EINTR {
		return false
	}
	s.rn, s.rerr = n, nil
	if errno != 0 {
		s.rn, s.rerr = 0, os.NewSyscallError("recvfrom", errno)
	}
	return true
}

// Write writes all of p.
func (s *Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.snd.write(s.rc, p); err != nil {
		if errors.Is(err, net.ErrClosed) {
			err = ErrClosed
		}
		return 0, err
	}
	return len(p), nil
}

// SyscallConn is the socket's, for a caller that reads it by other means
// while nothing else reads it.
func (s *Stream) SyscallConn() (syscall.RawConn, error) { return s.rc, nil }

// Close closes the socket.
func (s *Stream) Close() error { return s.uc.Close() }
