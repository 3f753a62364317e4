package ipc

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A Socket is what a Conn reads and writes: a *net.UnixConn, or an
// *InputPolled.
type Socket interface {
	syscall.Conn
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	CloseRead() error
	Close() error
}

// InputPolled is a connected Unix stream socket that the runtime poller
// watches for input only, and for room to write only while a write waits
// for it.
//
// The runtime registers every socket it polls for both, edge-triggered. A
// Unix socket signals room each time its peer reads, so a server whose
// clients read replies and notices is woken for nothing after each one: an
// idle thread leaves epoll_wait, finds no goroutine to run and sleeps again.
// InputPolled keeps the socket itself out of the runtime poller; an epoll
// instance of its own watches it for input and is what the runtime polls
// (an epoll descriptor is readable when one of its descriptors is ready).
// A second instance, made when a write first has to wait, is armed for room
// only while it does. Every call on the socket passes MSG_DONTWAIT, so none
// blocks a thread.
//
// Read, Write and Control make it a syscall.RawConn, for one reader and one
// writer at a time.
type InputPolled struct {
	fd   int             // sock's descriptor, for SendBatch while held
	sock *os.File        // the socket, in blocking mode: outside the poller
	sc   syscall.RawConn // sock's, for its descriptor's reference count
	in   *os.File        // epoll instance watching sock for input, in the poller
	inc  syscall.RawConn

	// The reader's callback and its outcome; the functions are made once,
	// so that a read allocates nothing.
	rf        func(uintptr) bool
	rdone     bool
	rerr      error
	rstep     func(uintptr) bool
	rctl      func(uintptr)
	wf        func(uintptr) bool
	wdone     bool
	werr      error
	wstep     func(uintptr) bool
	wctl      func(uintptr)
	closeOnce sync.Once
	isClosed  atomic.Bool  // set first by Close; read under mu, it keeps out from being made after
	holds     sync.RWMutex // read-held by a SendBatch using fd; Close takes it to set isClosed

	mu       sync.Mutex // guards what follows
	out      *os.File   // epoll instance watching sock for room, made by the first write that waits
	outc     syscall.RawConn
	outfd    int
	deadline time.Time // the write deadline, for out
}

// NewInputPolled takes over uc, which it closes, and returns its socket as
// an InputPolled.
func NewInputPolled(uc *net.UnixConn) (*InputPolled, error) {
	defer uc.Close() // takes the socket out of the runtime poller
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ipc: %w", err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("ipc: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("ipc: %w", os.NewSyscallError("fcntl", derr))
	}
	p, err := newInputPolled(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return p, nil
}

func newInputPolled(fd int) (*InputPolled, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("ipc: %w", os.NewSyscallError("fcntl", err))
	}
	infd, err := epollFor(fd, unix.EPOLLIN|unix.EPOLLRDHUP)
	if err != nil {
		return nil, err
	}
	p := &InputPolled{fd: fd, sock: os.NewFile(uintptr(fd), "commy-socket"), outfd: -1}
	p.in = os.NewFile(uintptr(infd), "commy-socket-input")
	p.sc, _ = p.sock.SyscallConn()
	p.inc, _ = p.in.SyscallConn()
	p.rstep, p.rctl = p.readStep, p.readCtl
	p.wstep, p.wctl = p.writeStep, p.writeCtl
	return p, nil
}

// epollFor returns a non-blocking epoll instance watching fd for events.
func epollFor(fd int, events uint32) (int, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("ipc: %w", os.NewSyscallError("epoll_create1", err))
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
		unix.Close(ep)
		return -1, fmt.Errorf("ipc: %w", os.NewSyscallError("epoll_ctl", err))
	}
	if err := unix.SetNonblock(ep, true); err != nil { // so that os.NewFile polls it
		unix.Close(ep)
		return -1, fmt.Errorf("ipc: %w", os.NewSyscallError("fcntl", err))
	}
	return ep, nil
}

// SyscallConn returns p itself, which is a syscall.RawConn.
func (p *InputPolled) SyscallConn() (syscall.RawConn, error) { return p, nil }

// Control calls f with the socket's descriptor, valid until f returns.
func (p *InputPolled) Control(f func(fd uintptr)) error { return p.closedErr(p.sc.Control(f)) }

// Read calls f with the socket's descriptor until f returns true, waiting
// for input in between, as syscall.RawConn's Read does.
func (p *InputPolled) Read(f func(fd uintptr) bool) error {
	p.rf, p.rerr = f, nil
	err := p.inc.Read(p.rstep)
	if err == nil {
		err = p.rerr
	}
	p.rf, p.rerr = nil, nil
	return p.closedErr(err)
}

func (p *InputPolled) readStep(uintptr) bool {
	if p.rerr = p.sc.Control(p.rctl); p.rerr != nil {
		return true
	}
	return p.rdone
}

func (p *InputPolled) readCtl(fd uintptr) { p.rdone = p.rf(fd) }

// Write calls f with the socket's descriptor until f returns true, waiting
// for room in between, as syscall.RawConn's Write does.
func (p *InputPolled) Write(f func(fd uintptr) bool) error {
	p.wf, p.werr = f, nil
	err := p.sc.Control(p.wctl)
	if err == nil && !p.wdone {
		err = p.waitWrite()
	}
	p.wf, p.werr = nil, nil
	return p.closedErr(err)
}

// waitWrite calls wf each time the socket has room until it returns true.
func (p *InputPolled) waitWrite() error {
	outc, err := p.arm()
	if err != nil {
		return err
	}
	err = outc.Read(p.wstep)
	if err == nil {
		err = p.werr
	}
	p.disarm()
	return err
}

func (p *InputPolled) writeStep(uintptr) bool {
	if p.werr = p.sc.Control(p.wctl); p.werr != nil {
		return true
	}
	return p.wdone
}

func (p *InputPolled) writeCtl(fd uintptr) { p.wdone = p.wf(fd) }

// arm makes the epoll instance for room if there is none yet and arms it;
// it is ready at once if the socket has room already.
func (p *InputPolled) arm() (syscall.RawConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isClosed.Load() {
		return nil, net.ErrClosed
	}
	if p.out == nil {
		var err error
		if cerr := p.sc.Control(func(fd uintptr) { p.outfd, err = epollFor(int(fd), 0) }); cerr != nil {
			return nil, cerr
		}
		if err != nil {
			return nil, err
		}
		p.out = os.NewFile(uintptr(p.outfd), "commy-socket-output")
		p.outc, _ = p.out.SyscallConn()
		if !p.deadline.IsZero() {
			p.out.SetReadDeadline(p.deadline)
		}
	}
	return p.outc, p.outEvents(unix.EPOLLOUT)
}

// disarm stops the room instance from waking the poller when the peer reads.
func (p *InputPolled) disarm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.isClosed.Load() {
		p.outEvents(0)
	}
}

// outEvents sets what the room instance watches; the caller holds mu.
func (p *InputPolled) outEvents(events uint32) error {
	var err error
	if cerr := p.sc.Control(func(fd uintptr) {
		err = unix.EpollCtl(p.outfd, unix.EPOLL_CTL_MOD, int(fd), &unix.EpollEvent{Events: events, Fd: int32(fd)})
	}); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("ipc: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return nil
}

// watchInput sets whether p's own epoll instance watches the socket for
// input: not while a Poller does, so that input wakes one of them only.
func (p *InputPolled) watchInput(on bool) error {
	ev := unix.EpollEvent{}
	if on {
		ev.Events = unix.EPOLLIN | unix.EPOLLRDHUP
	}
	var err error
	cerr := p.inc.Control(func(in uintptr) {
		if cerr := p.sc.Control(func(fd uintptr) {
			ev.Fd = int32(fd)
			err = unix.EpollCtl(int(in), unix.EPOLL_CTL_MOD, int(fd), &ev)
		}); cerr != nil {
			err = cerr
		}
	})
	if cerr != nil {
		return p.closedErr(cerr)
	}
	if err != nil {
		return fmt.Errorf("ipc: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return nil
}

// SetReadDeadline bounds how long a read may wait.
func (p *InputPolled) SetReadDeadline(t time.Time) error {
	return p.closedErr(p.in.SetReadDeadline(t))
}

// SetWriteDeadline bounds how long a write may wait, including one waiting
// now. A write that needs no wait is not refused past it.
func (p *InputPolled) SetWriteDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deadline = t
	if p.out != nil {
		return p.closedErr(p.out.SetReadDeadline(t))
	}
	return nil
}

// CloseRead shuts down the reading side: a waiting read sees the end of
// input.
func (p *InputPolled) CloseRead() error { return p.shutdown(unix.SHUT_RD) }

// Shutdown shuts down both directions at once: a waiting read sees the end
// of input, a waiting write fails and the peer sees the connection end.
// Unlike Close it never waits, so a Conn.ServeFrames callback may call it.
func (p *InputPolled) Shutdown() error { return p.shutdown(unix.SHUT_RDWR) }

func (p *InputPolled) shutdown(how int) error {
	var err error
	if cerr := p.sc.Control(func(fd uintptr) { err = unix.Shutdown(int(fd), how) }); cerr != nil {
		return p.closedErr(cerr)
	}
	if err != nil {
		return os.NewSyscallError("shutdown", err)
	}
	return nil
}

// Close closes the socket once no read or write is in progress, waking
// those that wait. It is safe to call more than once.
func (p *InputPolled) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.holds.Lock() // waits for a SendBatch that holds the descriptor
		p.isClosed.Store(true)
		p.holds.Unlock()
		p.in.Close()
		p.mu.Lock()
		if p.out != nil {
			p.out.Close()
		}
		p.mu.Unlock()
		err = p.sock.Close()
	})
	return err
}

// hold returns the socket's descriptor, which stays open until release; false
// once p is closed or while Close waits. It never waits itself: a batch
// holding one socket while it waited for another could wait, through two
// Closes, for a batch that holds the second and waits for the first.
func (p *InputPolled) hold() (int, bool) {
	if !p.holds.TryRLock() {
		return -1, false
	}
	if p.isClosed.Load() {
		p.holds.RUnlock()
		return -1, false
	}
	return p.fd, true
}

func (p *InputPolled) release() { p.holds.RUnlock() }

// closedErr reports any failure once p is closed as net.ErrClosed, as a
// closed *net.UnixConn reports itself: the files' own errors for it are
// not all exported.
func (p *InputPolled) closedErr(err error) error {
	if err != nil && p.isClosed.Load() {
		return net.ErrClosed
	}
	return err
}
