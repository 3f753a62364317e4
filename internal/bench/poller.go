package bench

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// parser is a connection read by a poller: SyscallConn is its socket, and
// Parse takes the whole messages at the start of b, decoding each as a
// client would, and says how many bytes and messages it took.
type parser interface {
	SyscallConn() (syscall.RawConn, error)
	Parse(b []byte) (used, n int, err error)
}

// poller reads the sockets of many connections from one goroutine, through
// one epoll instance, the way redis-benchmark reads all its clients from
// one event loop: one read per ready socket instead of a goroutine wake per
// message. It is not safe for concurrent use.
type poller struct {
	ep    int
	what  string    // what the connections are, for errors
	socks []*polled // by the index in the epoll event's data
	buf   []byte
	evs   []unix.EpollEvent
}

// polled is one socket of a poller.
type polled struct {
	p    parser
	fd   int
	rest []byte // the start of a message still arriving
}

// pollTimeout is how long one epoll_wait waits, so that a stop is seen.
const pollTimeout = 20 // ms

// watchIn is what every socket is watched for.
const watchIn = unix.EPOLLIN | unix.EPOLLRDHUP

// newPoller watches the sockets of ps, named what in errors, for input;
// an event's Fd is the index in ps. They must stay open until close.
func newPoller(what string, ps []parser) (*poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", os.NewSyscallError("epoll_create1", err))
	}
	p := &poller{ep: ep, what: what, buf: make([]byte, 64<<10), evs: make([]unix.EpollEvent, 256)}
	for i, c := range ps {
		rc, err := c.SyscallConn()
		if err != nil {
			p.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		fd := -1
		if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
			p.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		ev := unix.EpollEvent{Events: watchIn, Fd: int32(i)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			p.close()
			return nil, fmt.Errorf("bench: %w", os.NewSyscallError("epoll_ctl", err))
		}
		p.socks = append(p.socks, &polled{p: c, fd: fd})
	}
	return p, nil
}

func (p *poller) close() { unix.Close(p.ep) }

// wait waits up to pollTimeout for events and returns them, valid until
// the next call.
func (p *poller) wait() ([]unix.EpollEvent, error) {
	for {
		n, err := unix.EpollWait(p.ep, p.evs, pollTimeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bench: %w", os.NewSyscallError("epoll_wait", err))
		}
		return p.evs[:n], nil
	}
}

// watch sets the events the i-th socket is watched for.
func (p *poller) watch(i int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(i)}
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_MOD, p.socks[i].fd, &ev); err != nil {
		return fmt.Errorf("bench: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return nil
}

// read reads what s's socket holds and parses the whole messages in it,
// keeping the start of one still arriving; it returns how many it parsed.
func (p *poller) read(s *polled) (int, error) {
	got := 0
	for {
		n, err := unix.Read(s.fd, p.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return got, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return got, fmt.Errorf("bench: %s: %w", p.what, os.NewSyscallError("read", err))
		case n == 0:
			return got, fmt.Errorf("bench: %s: the server closed the connection", p.what)
		}
		b := p.buf[:n]
		if len(s.rest) > 0 {
			s.rest = append(s.rest, b...)
			b = s.rest
		}
		used, k, err := s.p.Parse(b)
		if err != nil {
			return got, err
		}
		got += k
		s.rest = append(s.rest[:0], b[used:]...)
		if n < len(p.buf) {
			return got, nil
		}
	}
}

// write writes as much of b to s's socket as it takes now, and returns
// the rest.
func (p *poller) write(s *polled, b []byte) ([]byte, error) {
	for len(b) > 0 {
		n, err := unix.Write(s.fd, b)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return b, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return b, fmt.Errorf("bench: %s: %w", p.what, os.NewSyscallError("write", err))
		}
		b = b[n:]
	}
	return b, nil
}
