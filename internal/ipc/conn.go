package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HeaderLen is the size of a frame's length prefix.
const HeaderLen = 4

// DefaultMaxFrame is the largest frame body accepted unless configured.
const DefaultMaxFrame = 16 << 20

// Descriptor limits: how many may arrive with one recvmsg, and how many may
// wait unclaimed on a connection.
const (
	maxFDsPerRead = 4
	maxQueuedFDs  = 16
)

var (
	// ErrEmptyFrame: a length prefix of zero.
	ErrEmptyFrame = fmt.Errorf("%w: empty frame", ErrProtocol)
	// ErrUnexpectedFD: a descriptor arrived where none may.
	ErrUnexpectedFD = fmt.Errorf("%w: unexpected file descriptor", ErrProtocol)
	// ErrTooManyFDs: more descriptors arrived than the connection holds.
	ErrTooManyFDs = fmt.Errorf("%w: too many file descriptors", ErrProtocol)
	// ErrTruncatedFDs: the kernel truncated the descriptors (MSG_CTRUNC).
	ErrTruncatedFDs = fmt.Errorf("%w: descriptors truncated", ErrProtocol)
	// ErrClosed: the connection was closed locally.
	ErrClosed = errors.New("ipc: connection closed")
	// ErrFrameTimeout: a frame that had started did not finish within the
	// frame timeout (see SetReadTimeouts).
	ErrFrameTimeout = fmt.Errorf("%w: frame not finished in time", ErrProtocol)
	// ErrIdle: no byte arrived within the idle timeout (see SetReadTimeouts).
	// The connection is intact and ReadFrame may be called again.
	ErrIdle = errors.New("ipc: idle timeout")
)

// Budget is charged for the memory a Conn's read buffer takes beyond its
// base size, as the buffer grows, and discharged as it shrinks. Charge
// refuses with an error (matching ErrQuotaExceeded, by convention) when the
// owner may hold no more. It must be safe for concurrent use when shared.
type Budget interface {
	Charge(n int) error
	Discharge(n int)
}

// Conn reads and writes frames on a Unix stream socket. One goroutine may read
// at a time; writes are serialised internally and may come from any goroutine.
type Conn struct {
	sk       Socket
	uc       *net.UnixConn // sk, when it is one
	rc       syscall.RawConn
	maxFrame int
	allowFDs bool

	// read side
	rbuf       []byte
	rbufTarget []byte
	msg        unix.Msghdr
	iov        unix.Iovec
	r, w       int
	oob        []byte
	fdMu       sync.Mutex // guards fds and fdsClosed: Close may run on any goroutine
	fds        []int
	fdsClosed  bool
	readFn     func(uintptr) bool
	stepFn     func(uintptr) bool // ServeFrames's
	serveFn    func([]byte) error
	serr       error
	yield      Yield         // see SetYield
	readyFn    func(uintptr) // ReadBatch's
	readyGot   bool
	want       int           // ReadBatch's read size
	early      bool          // earlyIdle set the deadline: do not arm it
	recvs      int           // recvmsg(2) calls made
	spinFor    time.Duration // see SetSpin
	spinning   bool          // holds the process's spin
	idleFrom   time.Time     // when the socket was last found empty
	gap        time.Duration // the client's last: from idleFrom until input
	rn         int
	rflags     int
	roobn      int
	rerr       error
	budget     Budget
	charged    int           // charged to budget for rbuf
	idle       time.Duration // see SetReadTimeouts
	frameTO    time.Duration
	inFrame    bool      // the read deadline is the frame deadline
	rdeadline  time.Time // the read deadline set, zero for none
	lastArm    time.Time // when the last blocking read began waiting

	// write side, guarded by wmu
	wmu       sync.Mutex
	tp        []byte // TryWritePart's bytes, result and callback
	tn        int
	terr      error
	partFn    func(uintptr) // TryWritePart's
	snd       sender        // writeLocked's
	wtimeout  time.Duration
	wdeadline time.Time

	closeOnce sync.Once
	closeErr  error
}

// Read buffer sizes: a connection starts with minReadBuf, small enough that
// an idle connection costs little, and doubles it up to burstReadBuf when a
// read fills it, so that a client that pipelines is read in few calls.
// Frames larger than the buffer grow it to fit (see fill).
const (
	minReadBuf   = 1024
	burstReadBuf = 8192
)

// NewConn wraps sk. maxFrame bounds the body of a frame read (0 means
// DefaultMaxFrame). Descriptors received are kept for TakeFD when allowFDs is
// set, else they are closed and the read fails with ErrUnexpectedFD.
func NewConn(sk Socket, maxFrame int, allowFDs bool) (*Conn, error) {
	rc, err := sk.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ipc: %w", err)
	}
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	uc, _ := sk.(*net.UnixConn)
	c := &Conn{
		sk: sk, uc: uc, rc: rc, maxFrame: maxFrame, allowFDs: allowFDs,
		rbuf: make([]byte, minReadBuf),
		oob:  make([]byte, unix.CmsgSpace(maxFDsPerRead*4)),
	}
	c.readFn = c.recvmsg
	c.stepFn = c.step
	c.readyFn = func(fd uintptr) { c.readyGot = c.recvmsg(fd) }
	c.partFn = c.sendPart
	c.snd.init()
	return c, nil
}

// Dial connects to the socket at path.
func Dial(path string, maxFrame int) (*Conn, error) {
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	c, err := NewConn(uc, maxFrame, true)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return c, nil
}

// UnixConn is the underlying socket, if it is a *net.UnixConn.
func (c *Conn) UnixConn() *net.UnixConn { return c.uc }

// MaxFrame is the largest body ReadFrame accepts.
func (c *Conn) MaxFrame() int { return c.maxFrame }

// SetMaxFrame changes the largest body ReadFrame accepts.
func (c *Conn) SetMaxFrame(n int) {
	if n > 0 {
		c.maxFrame = n
	}
}

// ReadFrame returns the body of the next frame. It is valid until the next
// ReadFrame. A length over the maximum fails with ErrFrameTooLarge before any
// of the body is read or memory is allocated for it.
func (c *Conn) ReadFrame() ([]byte, error) {
	for {
		body, need, err := c.next()
		if body != nil || err != nil {
			return body, err
		}
		if err := c.fill(need); err != nil {
			if errors.Is(err, io.EOF) && need > HeaderLen {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// next takes the next whole frame from the buffer, or returns how many
// unread bytes it needs first.
func (c *Conn) next() (body []byte, need int, err error) {
	if c.w-c.r < HeaderLen {
		return nil, HeaderLen, nil
	}
	n := binary.BigEndian.Uint32(c.rbuf[c.r:])
	if n == 0 {
		return nil, 0, ErrEmptyFrame
	}
	if uint64(n) > uint64(c.maxFrame) {
		return nil, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, c.maxFrame)
	}
	if c.w-c.r < HeaderLen+int(n) {
		return nil, HeaderLen + int(n), nil
	}
	body = c.rbuf[c.r+HeaderLen : c.r+HeaderLen+int(n)]
	c.r += HeaderLen + int(n)
	return body, 0, nil
}

// Buffered reports whether a whole frame is already buffered, so a reply can
// wait to be flushed with the next one.
func (c *Conn) Buffered() bool {
	_, size := SplitFrame(c.rbuf[c.r:c.w])
	return size > 0
}

// SplitFrame returns the body of the frame at the start of b and the
// frame's size, its length prefix included; size is 0 while b holds only
// part of the frame.
func SplitFrame(b []byte) (body []byte, size int) {
	if len(b) < HeaderLen {
		return nil, 0
	}
	n := int(binary.BigEndian.Uint32(b))
	if len(b)-HeaderLen < n {
		return nil, 0
	}
	return b[HeaderLen : HeaderLen+n], HeaderLen + n
}

// ServeFrames calls fn with the body of each frame read, in order, until a
// read or fn fails, and returns that error: ReadFrame's errors, io.EOF at
// the end of input, or fn's own. A body is valid until fn returns; fn runs
// on the calling goroutine and must not close the Conn, which waits for
// the read in progress (CloseRead, and InputPolled's Shutdown, are fine).
//
// It reads as a loop of ReadFrame would, inside one wait on the runtime
// poller, so that it can spin (see SetSpin). It reads until the socket is
// empty before it waits: a read that returned fewer bytes than it asked for
// may still leave the end of input behind it, which the poller reported
// with those bytes and will not report again.
func (c *Conn) ServeFrames(fn func(body []byte) error) error {
	c.serveFn = fn
	defer func() {
		c.serveFn = nil
		c.stopSpin()
		lastServed.CompareAndSwap(c, nil) // hold no closed Conn
	}()
	early := false
	for {
		// The poller refuses to wait at all past a deadline: arm it before
		// the first wait, which step then need not do again.
		if !early {
			c.armDeadline()
		}
		c.serr, c.early = nil, true
		err := c.rc.Read(c.stepFn)
		if err == nil {
			return c.serr // step stops only with an error
		}
		if errors.Is(err, net.ErrClosed) {
			return ErrClosed
		}
		if early = c.earlyIdle(err); early {
			continue
		}
		return c.timeoutErr(err)
	}
}

// step is ServeFrames's poller callback: it serves every whole frame
// buffered, then reads, until it must wait (false) or stop (true, with
// serr set).
func (c *Conn) step(fd uintptr) bool {
	if c.spinFor > 0 {
		spin.serving.Add(1)
		defer spin.serving.Add(-1)
	}
	for {
		body, need, err := c.next()
		if err != nil {
			c.serr = err
			return true
		}
		if body != nil {
			c.served()
			if err := c.serveFn(body); err != nil {
				c.serr = err
				return true
			}
			continue
		}
		if err := c.room(need); err != nil {
			c.serr = err
			return true
		}
		p := c.rbuf[c.w:]
		c.rbufTarget = p
		if !c.recvmsg(fd) {
			// Empty. Only a read finds the end of input that came with
			// the last bytes: the poller's one readiness event covered both.
			if c.spinAgain() {
				continue
			}
			if c.yield != NoYield && c.r == c.w && (c.yield == YieldAlways || lastServed.Load() != c) {
				c.serr = ErrYield
				return true
			}
			c.waiting()
			return false
		}
		c.arrived()
		m, err := c.received()
		c.w += m
		if err != nil {
			if errors.Is(err, io.EOF) && c.w > c.r {
				err = io.ErrUnexpectedEOF
			}
			c.serr = err
			return true
		}
		c.early = false
		c.grow()
	}
}

// lastServed is the Conn whose frame was served last, by ServeFrames or
// a ReadBatch (see SetSpin and SetYield).
var lastServed atomic.Pointer[Conn]

// ServedLast reports whether c's frame is the last one served, by any
// Conn of the process: whether c has had its server to itself since.
func (c *Conn) ServedLast() bool { return lastServed.Load() == c }

func (c *Conn) served() {
	if lastServed.Load() != c {
		lastServed.Store(c)
	}
}

// The spin of ServeFrames (see SetSpin) is shared by every Conn of the
// process: one spins at a time, and only while no other is being served
// and it was the last to be (lastServed).
var spin struct {
	held    atomic.Bool
	serving atomic.Int32
}

// SetSpin makes ServeFrames, after a read that emptied the socket, read
// again for up to d before it waits in the poller: a client that sends its
// next request within d is then served without the wake-up of an idle
// thread (on a virtual machine, tens of microseconds). It spins only while
// the client's last request came within d of the reply before it, while no
// other Conn of the process is being served and it was the last one served,
// and one Conn at a time: a broker with many busy clients or an idle one
// never spins. 0 (the default) never spins.
func (c *Conn) SetSpin(d time.Duration) { c.spinFor = d }

// spinAgain reports, when a read found the socket empty, whether to read
// again rather than wait.
func (c *Conn) spinAgain() bool {
	if c.spinning {
		return c.keepSpinning()
	}
	return c.startSpin()
}

// startSpin reports, when a read found the socket empty, whether to read
// again rather than wait, and starts the clock of the client's gap either
// way.
func (c *Conn) startSpin() bool {
	if c.spinFor <= 0 {
		return false
	}
	c.idleFrom = time.Now()
	if c.gap > c.spinFor || lastServed.Load() != c || spin.serving.Load() > 1 || !spin.held.CompareAndSwap(false, true) {
		return false
	}
	c.spinning = true
	return true
}

// keepSpinning reports whether a read that found nothing should be tried
// again, ending the spin when not.
func (c *Conn) keepSpinning() bool {
	if !c.spinning {
		return false
	}
	if lastServed.Load() == c && spin.serving.Load() == 1 && time.Since(c.idleFrom) < c.spinFor {
		runtime.Gosched() // anything runnable goes first
		return true
	}
	c.stopSpin()
	return false
}

// stopSpin gives the process's spin back if c holds it.
func (c *Conn) stopSpin() {
	if c.spinning {
		c.spinning = false
		spin.held.Store(false)
	}
}

// arrived ends a spin on a read that found input, and notes the client's gap.
func (c *Conn) arrived() {
	c.stopSpin()
	if !c.idleFrom.IsZero() {
		c.gap = time.Since(c.idleFrom)
		c.idleFrom = time.Time{}
	}
}

// waiting arms the read deadline before step waits, unless it is armed
// already: by ServeFrames, or by earlyIdle at its true time.
func (c *Conn) waiting() {
	if c.early {
		c.early = false
		return
	}
	c.armDeadline()
}

// fill makes at least n unread bytes available in rbuf.
func (c *Conn) fill(n int) error {
	early := false
	for c.w-c.r < n {
		if err := c.room(n); err != nil {
			return err
		}
		if !early {
			c.armDeadline()
		}
		m, err := c.read(c.rbuf[c.w:])
		c.w += m
		if err != nil {
			if m > 0 && c.w-c.r >= n {
				return nil
			}
			if early = c.earlyIdle(err); early {
				continue
			}
			return c.timeoutErr(err)
		}
		early = false
		c.grow()
	}
	return nil
}

// room makes space in rbuf for a read toward n unread bytes. The buffer
// grows with the bytes that arrive, at most doubling each time it fills,
// never to the length a frame declares.
func (c *Conn) room(n int) error {
	if c.r == c.w {
		c.r, c.w = 0, 0
		if len(c.rbuf) > 64<<10 {
			c.resize(minReadBuf) // give back a large frame's memory
		}
	}
	if len(c.rbuf)-c.r < n && c.r > 0 {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.rbuf) {
		return c.resize(max(min(c.r+n, 2*len(c.rbuf)), minReadBuf))
	}
	return nil
}

// grow doubles a buffer that a read filled, up to burstReadBuf: the socket
// may hold more, to be read in fewer calls. A refused charge only leaves the
// buffer as it is.
func (c *Conn) grow() {
	if c.w == len(c.rbuf) && len(c.rbuf) < burstReadBuf {
		c.resize(2 * len(c.rbuf))
	}
}

// resize replaces rbuf by one of size bytes holding the same unread bytes,
// charging or discharging the budget for the difference.
func (c *Conn) resize(size int) error {
	want := max(size-minReadBuf, 0)
	if c.budget != nil && want > c.charged {
		if err := c.budget.Charge(want - c.charged); err != nil {
			return fmt.Errorf("ipc: read buffer of %d bytes: %w", size, err)
		}
	}
	if c.budget != nil && want < c.charged {
		c.budget.Discharge(c.charged - want)
	}
	c.charged = want
	nb := make([]byte, size)
	c.w = copy(nb, c.rbuf[c.r:c.w])
	c.r = 0
	c.rbuf = nb
	return nil
}

// SetBudget makes the read buffer's growth beyond its base size charge b.
// Call it before the first read; ReleaseBuffer discharges what is left.
func (c *Conn) SetBudget(b Budget) { c.budget = b }

// ReleaseBuffer frees the read buffer and discharges its budget. Call it
// from the reading goroutine after the last read.
func (c *Conn) ReleaseBuffer() {
	if c.budget != nil && c.charged > 0 {
		c.budget.Discharge(c.charged)
	}
	c.charged = 0
	c.rbuf = nil
	c.r, c.w = 0, 0
}

// SetReadTimeouts bounds reads by the reading goroutine: idle is how long
// ReadFrame waits for the first byte of a frame before it fails with ErrIdle
// (0: forever); frame is how long a frame may take from its first byte to its
// last before ReadFrame fails with ErrFrameTimeout (0: forever). With either
// set, the Conn manages the read deadline itself: do not call SetReadDeadline.
func (c *Conn) SetReadTimeouts(idle, frame time.Duration) {
	c.idle, c.frameTO = idle, frame
	c.inFrame = false
	c.rdeadline = time.Time{}
	c.sk.SetReadDeadline(time.Time{})
}

// armDeadline sets the read deadline before a blocking read: the frame
// deadline once a frame has started, else the idle one, pushed forward
// lazily so that a busy connection rarely touches the timer.
func (c *Conn) armDeadline() {
	if c.idle <= 0 && c.frameTO <= 0 {
		return
	}
	now := time.Now()
	if c.w > c.r { // a frame has started
		if !c.inFrame {
			c.inFrame = true
			var t time.Time
			if c.frameTO > 0 {
				t = now.Add(c.frameTO)
			}
			c.setReadDeadline(t)
		}
		return
	}
	c.lastArm = now
	switch {
	case c.idle <= 0:
		c.setReadDeadline(time.Time{})
	case c.inFrame || c.rdeadline.IsZero() || c.rdeadline.Sub(now) < c.idle/2:
		c.setReadDeadline(now.Add(c.idle))
	}
	c.inFrame = false
}

func (c *Conn) setReadDeadline(t time.Time) {
	if t.Equal(c.rdeadline) {
		return
	}
	c.rdeadline = t
	c.sk.SetReadDeadline(t)
}

// earlyIdle reports whether err is an idle deadline that fired before the
// idle time had passed (armDeadline pushes it forward lazily), and if so
// moves the deadline to its true time.
func (c *Conn) earlyIdle(err error) bool {
	if c.idle <= 0 || c.inFrame || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	due := c.lastArm.Add(c.idle)
	if !time.Now().Before(due) {
		return false
	}
	c.setReadDeadline(due)
	return true
}

// timeoutErr turns the expiry of a deadline armDeadline set into ErrIdle or
// ErrFrameTimeout.
func (c *Conn) timeoutErr(err error) error {
	if (c.idle <= 0 && c.frameTO <= 0) || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if c.inFrame {
		return FrameTimeoutError(c.frameTO)
	}
	return IdleError(c.idle)
}

// FrameTimeoutError is the error of a frame not finished within d: it
// matches ErrFrameTimeout.
func FrameTimeoutError(d time.Duration) error { return fmt.Errorf("%w (%v)", ErrFrameTimeout, d) }

// IdleError is the error of a connection that sent nothing for d: it
// matches ErrIdle.
func IdleError(d time.Duration) error { return fmt.Errorf("%w: nothing received for %v", ErrIdle, d) }

// read wraps recvmsg(2) with MSG_CMSG_CLOEXEC, through the runtime poller.
func (c *Conn) read(p []byte) (int, error) {
	c.rbufTarget = p
	if err := c.rc.Read(c.readFn); err != nil {
		if errors.Is(err, net.ErrClosed) {
			err = ErrClosed
		}
		return 0, err
	}
	return c.received()
}

// received is the outcome of the recvmsg just made: the bytes read, after
// the descriptors that came with them are queued, or the error; io.EOF for
// the end of input.
func (c *Conn) received() (int, error) {
	if c.rerr != nil {
		return 0, c.rerr
	}
	if c.roobn > 0 {
		if err := c.takeRights(c.oob[:c.roobn], c.rflags); err != nil {
			return 0, err
		}
	} else if c.rflags&unix.MSG_CTRUNC != 0 {
		return 0, ErrTruncatedFDs
	}
	if c.rn == 0 {
		return 0, io.EOF
	}
	return c.rn, nil
}

// recvmsg is the poller callback for read: one recvmsg(2) into rbufTarget
// and oob. The msghdr and iovec live in the Conn, so a read allocates nothing.
// MSG_DONTWAIT makes it return at once whatever the descriptor's mode, so it
// is made as a raw system call (see sendto).
func (c *Conn) recvmsg(fd uintptr) bool {
	c.setupMsg()
	n, _, errno := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
	return c.gotMsg(int(n), errno)
}

// setupMsg points the msghdr at rbufTarget and oob for a recvmsg(2).
func (c *Conn) setupMsg() {
	p := c.rbufTarget
	c.iov.Base = &p[0]
	c.iov.SetLen(len(p))
	c.msg = unix.Msghdr{Iov: &c.iov, Control: &c.oob[0]}
	c.msg.SetIovlen(1)
	c.msg.SetControllen(len(c.oob))
	c.recvs++
}

// gotMsg notes the outcome of the recvmsg(2) setupMsg prepared; false when
// it found the socket empty.
func (c *Conn) gotMsg(n int, errno syscall.Errno) bool {
	if errno == unix.EAGAIN || errno == unix.EINTR {
		return false
	}
	c.rn, c.roobn, c.rflags, c.rerr = n, int(c.msg.Controllen), int(c.msg.Flags), nil
	if errno != 0 {
		c.rn, c.roobn, c.rerr = 0, 0, os.NewSyscallError("recvmsg", errno)
	}
	return true
}

// takeRights queues the descriptors of a control message, closing every one
// of them on any error.
func (c *Conn) takeRights(oob []byte, flags int) error {
	var got []int
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
				continue
			}
			fds, perr := unix.ParseUnixRights(&m)
			if perr != nil {
				err = perr
			}
			got = append(got, fds...)
		}
	}
	switch {
	case err != nil:
		err = fmt.Errorf("%w: control message: %w", ErrProtocol, err)
	case flags&unix.MSG_CTRUNC != 0:
		err = ErrTruncatedFDs
	case len(got) > 0 && !c.allowFDs:
		err = ErrUnexpectedFD
	}
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	switch {
	case err != nil:
	case len(c.fds)+len(got) > maxQueuedFDs:
		err = ErrTooManyFDs
	case c.fdsClosed: // a read that raced Close
		err = ErrClosed
	}
	if err != nil {
		for _, fd := range got {
			unix.Close(fd)
		}
		return err
	}
	c.fds = append(c.fds, got...)
	return nil
}

// TakeFD returns the oldest received descriptor not yet taken. Descriptors
// arrive no later than the bytes of the frame they travel with, so a reader
// that takes one for each frame that carries one gets them in order.
func (c *Conn) TakeFD() (*os.File, bool) {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if len(c.fds) == 0 {
		return nil, false
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return os.NewFile(uintptr(fd), "commy-received"), true
}

// WriteFrame writes one complete frame (length prefix included), with file
// attached as SCM_RIGHTS to its first byte when it is not nil.
func (c *Conn) WriteFrame(frame []byte, file *os.File) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(frame, file)
}

// SetWriteTimeout makes every write fail with os.ErrDeadlineExceeded once it
// has waited d for the peer to read (0: no limit). The deadline is pushed
// forward lazily, so a write that does not block costs one clock read.
func (c *Conn) SetWriteTimeout(d time.Duration) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wtimeout = d
	c.wdeadline = time.Time{}
	if d <= 0 {
		c.sk.SetWriteDeadline(time.Time{})
	}
}

// refreshDeadlineLocked keeps the write deadline between d/2 and d ahead.
func (c *Conn) refreshDeadlineLocked() {
	if c.wtimeout <= 0 {
		return
	}
	now := time.Now()
	if c.wdeadline.Sub(now) < c.wtimeout/2 {
		c.wdeadline = now.Add(c.wtimeout)
		c.sk.SetWriteDeadline(c.wdeadline)
	}
}

func (c *Conn) writeLocked(frame []byte, file *os.File) error {
	c.refreshDeadlineLocked()
	if file != nil {
		n, err := c.snd.writeRights(c.rc, frame, unix.UnixRights(int(file.Fd())))
		if err != nil {
			return c.wrapWriteErr(err)
		}
		frame = frame[n:]
	}
	if len(frame) == 0 {
		return nil
	}
	return c.wrapWriteErr(c.snd.write(c.rc, frame))
}

// sender writes a whole buffer through the runtime's poller with sendto.
// Its callback is made once, so a write allocates nothing.
type sender struct {
	p   []byte
	err error
	fn  func(uintptr) bool
}

func (s *sender) init() { s.fn = s.send }

// writeRights sends the first bytes of p with the control message oob
// (descriptors), waiting for room if need be, and reports how many of p
// went with it.
func (s *sender) writeRights(rc syscall.RawConn, p, oob []byte) (int, error) {
	var n int
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		for {
			n, serr = unix.SendmsgN(int(fd), p, oob, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err == nil && serr != nil {
		err = os.NewSyscallError("sendmsg", serr)
	}
	return n, err
}

// writeBuffers sends all of bufs, in as few sendmsg(2) calls as it takes.
func (s *sender) writeBuffers(rc syscall.RawConn, bufs net.Buffers) error {
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			n, err := unix.SendmsgBuffers(int(fd), bufs[:min(len(bufs), maxIovecs)], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			switch err {
			case nil:
			case unix.EAGAIN:
				return false
			case unix.EINTR:
				continue
			default:
				serr = err
				return true
			}
			for n > 0 && len(bufs) > 0 { // drop what went
				if n < len(bufs[0]) {
					bufs[0] = bufs[0][n:]
					break
				}
				n -= len(bufs[0])
				bufs = bufs[1:]
			}
			for len(bufs) > 0 && len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
		return true
	})
	if err == nil && serr != nil {
		err = os.NewSyscallError("sendmsg", serr)
	}
	return err
}

// write sends all of p, waiting in the poller whenever the socket is full.
func (s *sender) write(rc syscall.RawConn, p []byte) error {
	s.p = p
	err := rc.Write(s.fn)
	if err == nil {
		err = s.err
	}
	s.p, s.err = nil, nil
	return err
}

// send is the poller callback: sendto(2) of p until it is all sent, asking
// the poller to wait for room when the socket is full.
func (s *sender) send(fd uintptr) bool {
	for len(s.p) > 0 {
		n, errno := sendto(fd, s.p)
		switch errno {
		case 0:
			s.p = s.p[n:]
		case unix.EAGAIN:
			return false
		case unix.EINTR:
		default:
			s.err = os.NewSyscallError("sendto", errno)
			return true
		}
	}
	return true
}

// maxIovecs is the most buffers one sendmsg(2) takes (UIO_MAXIOV).
const maxIovecs = 1024

// MaxTryWrite is the largest write TryWrite attempts. A Unix stream socket
// sends that much as one buffer, so a write that does not block is whole.
const MaxTryWrite = 2048

// TryWrite writes p (whole frames, at most MaxTryWrite bytes) only if it can
// do so at once: no other write in progress and room in the socket now. It
// reports whether it wrote p; false with a nil error means the caller must
// write it the blocking way. It never waits for the peer, except to finish
// the rare partial write, within the write timeout.
func (c *Conn) TryWrite(p []byte) (bool, error) {
	if len(p) > MaxTryWrite {
		return false, nil
	}
	n, err := c.TryWritePart(p)
	switch {
	case err != nil:
		return false, err
	case n == 0:
		return false, nil
	case n < len(p):
		return true, c.FinishWrite(p[n:])
	}
	return true, nil
}

// TryWritePart writes as much of p (whole frames, of any size) as the
// socket takes now, without waiting, unless another write is in progress.
// It returns how many bytes went: all of p; none (another write is in
// progress, or the socket is full); or some, and then the write lock is
// kept, so that nothing else is written into the middle of a frame, until
// FinishWrite writes the rest (from any goroutine).
func (c *Conn) TryWritePart(p []byte) (n int, err error) {
	if len(p) == 0 || !c.wmu.TryLock() {
		return 0, nil
	}
	c.refreshDeadlineLocked()
	c.tp, c.tn, c.terr = p, 0, nil
	cerr := c.rc.Control(c.partFn)
	n, errno := c.tn, c.terr
	c.tp, c.terr = nil, nil
	switch {
	case cerr != nil:
		err = c.wrapWriteErr(cerr)
	case errno != nil:
		err = os.NewSyscallError("sendto", errno)
	case n > 0 && n < len(p):
		return n, nil // FinishWrite unlocks
	}
	c.wmu.Unlock()
	if err != nil {
		return 0, err
	}
	return n, nil
}

// sendPart is TryWritePart's callback: sendto(2) of tp until it is all
// sent or the socket is full.
func (c *Conn) sendPart(fd uintptr) {
	for c.tn < len(c.tp) {
		n, errno := sendto(fd, c.tp[c.tn:])
		switch errno {
		case 0:
			c.tn += n
		case unix.EINTR:
		case unix.EAGAIN:
			return
		default:
			c.terr = errno
			return
		}
	}
}

// FinishWrite writes rest, what a TryWritePart that sent part of its
// bytes left, waiting for room as WriteFrame does, and releases the write
// lock that TryWritePart kept.
func (c *Conn) FinishWrite(rest []byte) error {
	defer c.wmu.Unlock()
	return c.writeLocked(rest, nil)
}

// WriteFrames writes several frames with one system call where it can.
func (c *Conn) WriteFrames(frames net.Buffers) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.refreshDeadlineLocked()
	return c.wrapWriteErr(c.snd.writeBuffers(c.rc, frames))
}

func (c *Conn) wrapWriteErr(err error) error {
	if err != nil && errors.Is(err, net.ErrClosed) {
		return ErrClosed
	}
	return err
}

// SetWriteDeadline bounds how long a write may block, including one blocked
// now. With a write timeout set, a later write may push it forward again.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.sk.SetWriteDeadline(t) }

// SetReadDeadline bounds how long a read may block.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.sk.SetReadDeadline(t) }

// CloseRead shuts down the reading side, waking a blocked ReadFrame.
func (c *Conn) CloseRead() error { return c.sk.CloseRead() }

// Close closes the socket and any received descriptor not taken. It is safe
// to call more than once and concurrently with reads and writes.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.sk.Close()
		c.ReleaseFDs()
	})
	return c.closeErr
}

// ReleaseFDs closes received descriptors nobody took, and any received from
// now on. Close does it too; it is safe to call more than once, from any
// goroutine.
func (c *Conn) ReleaseFDs() {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
	c.fdsClosed = true
}
