package ipc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrYield: ServeFrames found the socket empty with no frame started,
	// and the Conn yields (see SetYield) rather than wait.
	ErrYield = errors.New("ipc: no input: yielding to the poller")
	// ErrDeferFrame is returned by a ReadBatch.Serve callback to leave the
	// frame it was given, and those after it, to ServeFrames.
	ErrDeferFrame = errors.New("ipc: frame deferred to the reader")
)

// Yield says when ServeFrames yields (see SetYield).
type Yield int

const (
	// NoYield: ServeFrames waits for input itself (the default).
	NoYield Yield = iota
	// YieldWhenBusy: it yields unless its Conn's frame was the last one
	// served in the process, by ServeFrames or a ReadBatch: with no other
	// connection busy, its own reader serves it with fewer system calls
	// and can spin for it.
	YieldWhenBusy
	// YieldAlways: it yields whenever it would wait for input.
	YieldAlways
)

// SetYield makes ServeFrames return ErrYield, rather than wait, when a read
// finds the socket empty and no frame has started (after any spin), as y
// says, so that an event loop can watch the socket with many others
// (Poller) and serve it (ReadBatch) until it hands it back. The
// reader's goroutine then calls ServeFrames again.
func (c *Conn) SetYield(y Yield) { c.yield = y }

// prepareReady makes room for a ReadBatch's read.
func (c *Conn) prepareReady() error {
	_, need, err := c.next() // no whole frame is buffered: ServeFrames served them
	if err != nil {
		return err
	}
	if err := c.room(need); err != nil {
		return err
	}
	c.want = len(c.rbuf) - c.w
	c.rbufTarget = c.rbuf[c.w:]
	return nil
}

// serveRead is ReadBatch.Serve once the read is made (readyGot and the
// recvmsg outcome set).
func (c *Conn) serveRead(fn func(body []byte) error) (bool, error) {
	if c.spinFor > 0 {
		spin.serving.Add(1)
		defer spin.serving.Add(-1)
	}
	if !c.readyGot {
		return c.r == c.w, nil // nothing there after all
	}
	m, err := c.received()
	c.w += m
	if err != nil {
		if errors.Is(err, io.EOF) && c.w > c.r {
			err = io.ErrUnexpectedEOF
		}
		return false, err
	}
	c.grow()
	for {
		body, _, err := c.next()
		if err != nil {
			return false, err
		}
		if body == nil {
			return c.r == c.w || m == c.want, nil
		}
		c.served()
		if err := fn(body); err != nil {
			if err == ErrDeferFrame {
				c.r -= HeaderLen + len(body)
				return false, nil
			}
			return false, err
		}
	}
}

// ReadBatch serves what the sockets of many Conns hold now, for an event
// loop, while their readers' goroutines wait for the loop to hand them back
// (see SetYield): one read each that never waits, all of them through
// io_uring in one system call where the kernel allows it, then the whole
// frames of each, in order, as ServeFrames would. Add each Conn, Read, then
// Serve each in the order added. One goroutine uses it at a time; the
// Conns' sockets must stay open until Read returns.
type ReadBatch struct {
	// Recvmsg makes the batch read one Conn at a time, never through io_uring.
	Recvmsg bool

	conns []*Conn
	errs  []error
	fds   []int
	msgs  []*unix.Msghdr
	res   []int32
	slot  []int
}

// Add queues c's read.
func (b *ReadBatch) Add(c *Conn) {
	b.conns = append(b.conns, c)
	b.errs = append(b.errs, c.prepareReady())
}

// Read makes the queued reads.
func (b *ReadBatch) Read() {
	var r *ring
	if !b.Recvmsg && len(b.conns) > 1 {
		r = takeRing()
	}
	b.fds, b.msgs, b.slot = b.fds[:0], b.msgs[:0], b.slot[:0]
	for i, c := range b.conns {
		c.readyGot = false
		if b.errs[i] != nil {
			continue
		}
		ip, ok := c.sk.(*InputPolled)
		if r == nil || !ok {
			if err := c.rc.Control(c.readyFn); err != nil {
				if errors.Is(err, net.ErrClosed) {
					err = ErrClosed
				}
				b.errs[i] = err
			}
			continue
		}
		c.setupMsg()
		b.fds, b.msgs, b.slot = append(b.fds, ip.fd), append(b.msgs, &c.msg), append(b.slot, i)
	}
	if r == nil {
		return
	}
	for start := 0; start < len(b.fds); start += ringEntries {
		end := min(start+ringEntries, len(b.fds))
		if cap(b.res) < ringEntries {
			b.res = make([]int32, ringEntries)
		}
		res := b.res[:end-start]
		err := r.recvmsgAll(b.fds[start:end], b.msgs[start:end], res)
		got := 0
		for k, n := range res {
			i := b.slot[start+k]
			c := b.conns[i]
			switch {
			case n == -int32(unix.EINPROGRESS):
				// Left in flight by a failed ring: what it read is lost, and
				// the connection with it.
				b.errs[i] = errRingBroken
			case n == -int32(unix.EINVAL) || n == -int32(unix.EOPNOTSUPP):
				// The kernel has io_uring but not this operation: one
				// recvmsg each, from now on.
				uringFailed(os.NewSyscallError("io_uring recvmsg", syscall.Errno(-n)))
				if err := c.rc.Control(c.readyFn); err != nil {
					b.errs[i] = err
				}
			case n < 0:
				c.readyGot = c.gotMsg(0, syscall.Errno(-n))
				got++
			default:
				c.readyGot = c.gotMsg(int(n), 0)
				got++
			}
		}
		uringRecvs.Add(uint64(got))
		if err != nil {
			r.close()
			uringFailed(err)
			r = nil
			break
		}
	}
	if r != nil {
		putRing(r)
	}
}

// Serve calls fn with each whole frame the i-th Conn added has buffered,
// once Read has read it. fn may return ErrDeferFrame to leave the frame it
// was given, and those after it, buffered for ServeFrames.
//
// It reports whether the loop may keep the Conn: false when a frame has
// started that a read short of the buffer did not finish (the socket is
// empty: its deadline is the reader's to keep), after fn deferred a frame,
// and with any error, the read's or fn's, which ServeFrames would have
// returned. After a read that filled the buffer a frame may be left
// unfinished (Started) while the socket holds the rest.
func (b *ReadBatch) Serve(i int, fn func(body []byte) error) (bool, error) {
	if b.errs[i] != nil {
		return false, b.errs[i]
	}
	return b.conns[i].serveRead(fn)
}

// Reset empties the batch.
func (b *ReadBatch) Reset() {
	clear(b.conns)
	clear(b.msgs)
	b.conns, b.errs, b.msgs = b.conns[:0], b.errs[:0], b.msgs[:0]
}

// Started reports whether a frame has started to arrive and is not whole
// yet.
func (c *Conn) Started() bool { return c.w > c.r }

// Poller watches many connections for input, level-triggered, for an event
// loop that serves them from one goroutine (ReadBatch). It is an epoll
// instance that the runtime poller watches in turn, so the loop's goroutine
// waits as any other does. Add and Remove may be called from any goroutine;
// Wait and Poll from one at a time.
type Poller struct {
	ep     int
	f      *os.File
	rc     syscall.RawConn
	evs    []unix.EpollEvent
	n      int
	waitFn func(uintptr) bool
	closed atomic.Bool
}

// pollerEvents is the most events one Wait or Poll returns.
const pollerEvents = 256

// NewPoller returns an empty Poller.
func NewPoller() (*Poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("ipc: %w", os.NewSyscallError("epoll_create1", err))
	}
	if err := unix.SetNonblock(ep, true); err != nil { // so that os.NewFile polls it
		unix.Close(ep)
		return nil, fmt.Errorf("ipc: %w", os.NewSyscallError("fcntl", err))
	}
	p := &Poller{ep: ep, f: os.NewFile(uintptr(ep), "commy-poller"), evs: make([]unix.EpollEvent, pollerEvents)}
	p.rc, _ = p.f.SyscallConn()
	// The runtime forgets readiness it reported before a wait began, so
	// the wait must look again, even right after a Poll.
	p.waitFn = func(uintptr) bool { return p.poll() > 0 }
	return p, nil
}

// Add watches c's socket for input (and its end) until Remove, reporting it
// by token. A socket with input already is reported at once. An
// InputPolled socket stops watching for input itself meanwhile.
func (p *Poller) Add(c *Conn, token uint64) error {
	if err := p.ctl(c, unix.EPOLL_CTL_ADD, token); err != nil {
		return err
	}
	if ip, ok := c.sk.(*InputPolled); ok {
		if err := ip.watchInput(false); err != nil {
			p.ctl(c, unix.EPOLL_CTL_DEL, 0)
			return err
		}
	}
	return nil
}

// Remove stops watching c's socket. Call it before the socket is closed.
func (p *Poller) Remove(c *Conn) error {
	err := p.ctl(c, unix.EPOLL_CTL_DEL, 0)
	if ip, ok := c.sk.(*InputPolled); ok {
		if werr := ip.watchInput(true); err == nil {
			err = werr
		}
	}
	return err
}

func (p *Poller) ctl(c *Conn, op int, token uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		err = p.ctlFD(op, int(fd), &ev)
	})
	if cerr != nil {
		return fmt.Errorf("ipc: %w", cerr)
	}
	return err
}

func (p *Poller) ctlFD(op, fd int, ev *unix.EpollEvent) error {
	var err error
	cerr := p.rc.Control(func(ep uintptr) { err = unix.EpollCtl(int(ep), op, fd, ev) })
	if cerr != nil {
		if p.closed.Load() {
			return ErrClosed
		}
		return fmt.Errorf("ipc: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("ipc: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return nil
}

// Wait appends to tokens those of the sockets with input, waiting until
// there is one, or until the deadline set by SetDeadline (then the error
// matches os.ErrDeadlineExceeded) or Close (ErrClosed). A socket keeps
// being reported while it has input, though only new input ends a wait.
func (p *Poller) Wait(tokens []uint64) ([]uint64, error) {
	p.n = 0
	if err := p.rc.Read(p.waitFn); err != nil {
		if p.closed.Load() {
			err = ErrClosed
		}
		return tokens, err
	}
	return p.tokens(tokens), nil
}

// poll is one epoll_wait(2) that does not wait.
func (p *Poller) poll() int {
	n, errno := epollPwait(uintptr(p.ep), p.evs)
	if errno != 0 {
		n = 0
	}
	p.n = n
	return p.n
}

func (p *Poller) tokens(tokens []uint64) []uint64 {
	for _, ev := range p.evs[:p.n] {
		tokens = append(tokens, uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32)
	}
	return tokens
}

// SetDeadline bounds how long Wait waits; the zero time is no bound.
func (p *Poller) SetDeadline(t time.Time) error { return p.f.SetReadDeadline(t) }

// Close closes the epoll instance, waking a Wait with ErrClosed. It is safe
// to call more than once.
func (p *Poller) Close() error {
	p.closed.Store(true)
	if err := p.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
