package bench

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/commy/commy/internal/ipc"
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
// message. The epoll instance itself waits in the runtime's poller, so that
// an idle loop parks its goroutine rather than a thread in epoll_wait (which
// the runtime's monitor would then keep checking on), and its socket calls,
// which never wait, are made raw (ipc.Recvfrom, ipc.Sendto,
// ipc.EpollPwait): with the runtime's system call bookkeeping they cost the
// loop about a quarter more CPU here. It is not safe for concurrent use,
// but for interrupt.
type poller struct {
	ep    *os.File
	rc    syscall.RawConn // of ep
	what  string          // what the connections are, for errors
	socks []*polled       // by the index in the epoll event's data
	buf   []byte
	evs   []unix.EpollEvent
}

// polled is one socket of a poller.
type polled struct {
	p    parser
	fd   int
	rest []byte // the start of a message still arriving
}

// watchIn is what every socket is watched for.
const watchIn = unix.EPOLLIN | unix.EPOLLRDHUP

// newPoller watches the sockets of ps, named what in errors, for input;
// an event's Fd is the index in ps. They must stay open until close.
func newPoller(what string, ps []parser) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", os.NewSyscallError("epoll_create1", err))
	}
	if err := unix.SetNonblock(fd, true); err != nil { // so that os.NewFile puts it in the runtime's poller
		unix.Close(fd)
		return nil, fmt.Errorf("bench: %w", os.NewSyscallError("fcntl", err))
	}
	p := &poller{ep: os.NewFile(uintptr(fd), "epoll"), what: what, buf: make([]byte, 64<<10), evs: make([]unix.EpollEvent, 256)}
	if p.rc, err = p.ep.SyscallConn(); err != nil {
		p.close()
		return nil, fmt.Errorf("bench: %w", err)
	}
	for i, c := range ps {
		rc, err := c.SyscallConn()
		if err != nil {
			p.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		sfd := -1
		if err := rc.Control(func(f uintptr) { sfd = int(f) }); err != nil {
			p.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		p.socks = append(p.socks, &polled{p: c, fd: sfd})
		if err := p.ctl(unix.EPOLL_CTL_ADD, i, watchIn); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

func (p *poller) close() { p.ep.Close() }

// interrupt makes the wait in progress, and every one after, fail with
// os.ErrDeadlineExceeded. It may be called from any goroutine, also after
// close.
func (p *poller) interrupt() { p.ep.SetReadDeadline(time.Unix(1, 0)) }

// wait waits for events and returns them, valid until the next call.
func (p *poller) wait() ([]unix.EpollEvent, error) {
	var n int
	var err error
	rerr := p.rc.Read(func(ep uintptr) bool {
		for {
			n, err = ipc.EpollPwait(int(ep), p.evs)
			if !errors.Is(err, unix.EINTR) {
				return err != nil || n > 0 // else wait until the instance is readable
			}
		}
	})
	if rerr != nil {
		return nil, fmt.Errorf("bench: %s: %w", p.what, rerr)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: %w", os.NewSyscallError("epoll_wait", err))
	}
	return p.evs[:n], nil
}

// watch sets the events the i-th socket is watched for.
func (p *poller) watch(i int, events uint32) error { return p.ctl(unix.EPOLL_CTL_MOD, i, events) }

// ctl wraps epoll_ctl(2) for the i-th socket.
func (p *poller) ctl(op, i int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(i)}
	var err error
	cerr := p.rc.Control(func(ep uintptr) { err = unix.EpollCtl(int(ep), op, p.socks[i].fd, &ev) })
	if cerr != nil {
		return fmt.Errorf("bench: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("bench: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return nil
}

// read reads what s's socket holds and parses the whole messages in it,
// keeping the start of one still arriving; it returns how many it parsed.
func (p *poller) read(s *polled) (int, error) {
	got := 0
	for {
		n, err := ipc.Recvfrom(s.fd, p.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return got, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return got, fmt.Errorf("bench: %s: %w", p.what, os.NewSyscallError("recvfrom", err))
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
		n, err := ipc.Sendto(s.fd, b)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return b, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return b, fmt.Errorf("bench: %s: %w", p.what, os.NewSyscallError("sendto", err))
		}
		b = b[n:]
	}
	return b, nil
}
