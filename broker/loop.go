package broker

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commy/commy/internal/ipc"
)

// loop serves, from one goroutine, the requests of every session whose
// socket its reader found empty while another connection was busy: the
// reader yields its connection to the loop (ipc.Conn.SetYield) and waits
// until the loop hands it back. The loop reads each ready socket once
// (level-triggered, so it never needs the read that finds a socket empty),
// the sockets of one pass together (ipc.ReadBatch, one system call through
// io_uring), serves their requests inline, and sends the replies together
// (ipc.SendBatch). Under load that is a fraction of the system calls, and none of
// the goroutine wake-ups, of a reader per session.
//
// Anything that could make the loop wait goes back to the session's reader:
// a frame that has started and whose rest is not in the socket, a request
// other than the quick ones (servedInLoop), replies the socket has no room
// for (the reader writes what is left), the end of input and any error. So
// does a session served alone in two passes in a row: with the broker to
// itself, its reader serves it with fewer system calls.
type loop struct {
	p       *ipc.Poller
	idle    time.Duration // Config.IdleTimeout
	frameTO time.Duration // Config.FrameTimeout

	requests atomic.Uint64 // served by the loop
	held     atomic.Int32  // connections parked with it
	handed   atomic.Uint64 // connections handed back

	mu    sync.Mutex // guards slots and free
	slots []loopSlot // by token's low half
	free  []uint32

	// Used by the loop's goroutine only.
	tokens []uint64
	served []*session
	backs  []*session
	batch  ipc.SendBatch
	reads  ipc.ReadBatch
	sent   []*session // the sessions of batch's writes, in order
	flush  func(i int, ok bool, err error)
	now    time.Time // when the pass began, if the loop sweeps
	alone  *session  // served alone in the last pass
}

type loopSlot struct {
	s   *session
	gen uint32
}

// newLoop returns a loop that is not running yet.
func newLoop(idle, frameTO time.Duration, sendto bool) (*loop, error) {
	p, err := ipc.NewPoller()
	if err != nil {
		return nil, err
	}
	l := &loop{p: p, idle: idle, frameTO: frameTO}
	l.batch.Sendto = sendto
	l.reads.Recvmsg = sendto
	l.flush = l.flushed
	return l, nil
}

// park gives s's connection to the loop and waits until the loop hands it
// back: nil to go on reading, or the error that ends the connection (which
// ServeFrames would have returned). Called by s's reader after ServeFrames
// returned ipc.ErrYield.
func (l *loop) park(s *session) error {
	if l.sweeps() {
		s.lastIn = time.Now()
	}
	s.frameFrom = time.Time{}
	l.held.Add(1)
	defer l.held.Add(-1)
	tok := l.reserve()
	if err := l.p.Add(s.conn, tok); err != nil {
		// The loop is closing, or the kernel refused: the reader serves
		// the connection itself from now on.
		l.release(uint32(tok))
		s.conn.SetYield(ipc.NoYield)
		return nil
	}
	s.slot, s.loop = uint32(tok), l
	l.mu.Lock()
	l.slots[s.slot].s = s
	l.mu.Unlock()
	return <-s.resume
}

// reserve returns the token of a free slot. The slot names no session
// until park has added its socket: the loop ignores it until then.
func (l *loop) reserve() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var i uint32
	if n := len(l.free); n > 0 {
		i = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		i = uint32(len(l.slots))
		l.slots = append(l.slots, loopSlot{})
	}
	l.slots[i].gen++
	return uint64(i) | uint64(l.slots[i].gen)<<32
}

// release frees slot i.
func (l *loop) release(i uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slots[i].s = nil
	l.free = append(l.free, i)
}

// run serves until close.
func (l *loop) run() {
	var sweep time.Time
	if l.sweeps() {
		sweep = time.Now().Add(l.sweepEvery())
		l.p.SetDeadline(sweep)
	}
	for {
		// Wait looks first: a socket that still has input is found again,
		// though it would not wake the wait.
		toks, err := l.p.Wait(l.tokens[:0])
		if errors.Is(err, ipc.ErrClosed) {
			return
		} // else the deadline of the sweep
		if l.sweeps() {
			l.now = time.Now()
		}
		l.pass(toks)
		l.tokens = toks[:0]
		if l.sweeps() && l.now.After(sweep) {
			l.sweep()
			sweep = time.Now().Add(l.sweepEvery())
			l.p.SetDeadline(sweep)
		}
	}
}

// sweeps reports whether the loop enforces timeouts.
func (l *loop) sweeps() bool { return l.idle > 0 || l.frameTO > 0 }

// sweepEvery is how often the loop looks for connections past a timeout.
func (l *loop) sweepEvery() time.Duration {
	d := l.idle
	if d <= 0 || l.frameTO > 0 && l.frameTO < d {
		d = l.frameTO
	}
	return max(d/4, 10*time.Millisecond)
}

// sweep hands back the connections whose unfinished frame is older than
// the frame timeout, or idle for the idle timeout, with the errors
// ServeFrames would have returned.
func (l *loop) sweep() {
	now := time.Now()
	l.mu.Lock()
	for _, sl := range l.slots {
		switch s := sl.s; {
		case s == nil:
		case l.frameTO > 0 && !s.frameFrom.IsZero() && now.Sub(s.frameFrom) >= l.frameTO:
			l.giveBack(s, ipc.FrameTimeoutError(l.frameTO))
		case l.idle > 0 && s.frameFrom.IsZero() && now.Sub(s.lastIn) >= l.idle:
			l.giveBack(s, ipc.IdleError(l.idle))
		}
	}
	l.mu.Unlock()
	l.handBack()
}

// pass serves the sessions of toks, then sends their replies together and
// hands back those that must go back.
func (l *loop) pass(toks []uint64) {
	l.mu.Lock()
	for _, t := range toks {
		if i := uint32(t); int(i) < len(l.slots) {
			if sl := l.slots[i]; sl.s != nil && sl.gen == uint32(t>>32) {
				l.served = append(l.served, sl.s)
			}
		}
	}
	l.mu.Unlock()
	now := l.now
	for _, s := range l.served {
		l.reads.Add(s.conn)
	}
	l.reads.Read()
	alone := len(l.served) == 1 && l.served[0].conn.ServedLast()
	for i, s := range l.served {
		s.lastIn = now
		keep, err := l.reads.Serve(i, s.loopFn)
		if errors.Is(err, errLoopFull) {
			err = nil
		}
		switch {
		case !keep || err != nil:
			l.giveBack(s, err)
		case !s.conn.Started():
			s.frameFrom = time.Time{}
		case s.frameFrom.IsZero():
			s.frameFrom = now
		}
		if len(s.wbuf) == 0 || errors.Is(s.backErr, errEnded) {
			continue
		}
		if len(s.wbuf) <= ipc.MaxTryWrite {
			l.batch.Add(s.conn, s.wbuf)
			l.sent = append(l.sent, s)
			continue
		}
		// Too large to go whole or not at all: as much as the socket takes,
		// and the reader writes the rest.
		n, err := s.conn.TryWritePart(s.wbuf)
		switch {
		case err != nil:
			l.giveBack(s, errEnded)
		case n == len(s.wbuf):
			s.replied()
		case n > 0:
			s.rest = s.wbuf[n:] // the write lock is kept for it
			l.giveBack(s, nil)
		default:
			l.giveBack(s, nil)
		}
	}
	l.reads.Reset()
	// Mapped readers that were waiting at their file's last wake are woken
	// before the replies go out (see session.flush); the others after.
	owed := false
	for _, s := range l.served {
		if s.wakeWatched() {
			owed = true
		}
	}
	if owed && beforeReply != nil {
		beforeReply()
	}
	l.batch.Flush(l.flush)
	// A session served alone in two passes in a row, no other connection
	// served before either (by this loop, another or a reader), has the
	// broker to itself: its reader serves it with fewer system calls (and
	// spins for it), until another connection is served (ipc.Conn.SetYield).
	switch {
	case !alone:
		l.alone = nil
	case l.served[0] == l.alone:
		l.giveBack(l.alone, nil)
		l.alone = nil
	default:
		l.alone = l.served[0]
	}
	for i, s := range l.served {
		s.wakeReaders()
		l.served[i] = nil
	}
	l.served = l.served[:0]
	clear(l.sent)
	l.sent = l.sent[:0]
	l.handBack()
}

// flushed is the outcome of the reply of l.sent[i]: as session.flush, but
// a reply the socket had no room for goes back to the reader to wait.
func (l *loop) flushed(i int, ok bool, err error) {
	s := l.sent[i]
	switch {
	case ok && err == nil:
		s.replied()
	case err != nil:
		l.giveBack(s, errEnded)
	default:
		l.giveBack(s, nil)
	}
}

// replied accounts for the replies in wbuf, which the loop wrote.
func (s *session) replied() {
	s.b.stats.bytesOut.Add(uint64(len(s.wbuf)))
	s.releaseReplies()
	s.wbuf = s.wbuf[:0]
}

// finishReply writes what the loop's TryWritePart left of the replies.
func (s *session) finishReply() error {
	if s.rest == nil {
		return nil
	}
	err := s.conn.FinishWrite(s.rest)
	s.rest = nil
	if err != nil {
		return err
	}
	s.replied()
	return nil
}

// giveBack marks s to be handed back to its reader with err at the end of
// the pass; the first error given stays.
func (l *loop) giveBack(s *session, err error) {
	if s.back {
		if s.backErr == nil {
			s.backErr = err
		}
		return
	}
	s.back, s.backErr = true, err
	l.backs = append(l.backs, s)
}

// handBack hands the sessions given back to their readers.
func (l *loop) handBack() {
	for i, s := range l.backs {
		if s == l.alone {
			l.alone = nil
		}
		l.p.Remove(s.conn)
		l.release(s.slot)
		err := s.backErr
		s.back, s.backErr = false, nil
		s.resume <- err
		l.backs[i] = nil
		l.handed.Add(1)
	}
	l.backs = l.backs[:0]
}

// pickLoop is the loop a reader yields its connection to: the one holding
// the fewest connections, the first of them from a point that moves on
// each time, so that ties are shared out too.
func (b *Broker) pickLoop() *loop {
	n := len(b.loops)
	from := int(b.nextLp.Add(1))
	best := b.loops[from%n]
	for i := 1; i < n; i++ {
		if l := b.loops[(from+i)%n]; l.held.Load() < best.held.Load() {
			best = l
		}
	}
	return best
}

// closeLoops stops the loops; see loop.close.
func (b *Broker) closeLoops() {
	for _, l := range b.loops {
		l.close()
	}
}

// loopYield is when a reader yields to the loop; tests make it always.
var loopYield = ipc.YieldWhenBusy

// close stops the loop once no session is left to serve.
func (l *loop) close() error { return l.p.Close() }

// errLoopFull stops the loop serving a session whose replies reached
// maxReplies: its reader writes them the blocking way first.
var errLoopFull = errors.New("replies to write first")

// maxReplies is how many bytes of replies a session queues before it writes
// them, whatever requests are still buffered.
const maxReplies = 64 << 10

// servedInLoop reports whether the loop serves m itself: the requests that
// never wait for the disk or pass a descriptor.
func servedInLoop(m ipc.Message) bool {
	switch m.(type) {
	case *ipc.Heartbeat, *ipc.ReadVariable, *ipc.WriteVariable, *ipc.ReportVariableChanges,
		*ipc.Subscribe, *ipc.Unsubscribe, *ipc.GetService, *ipc.ListVariables:
		return true
	}
	return false
}

// loopFrame is frame for the loop: it serves one request and leaves the
// reply queued for the loop to send.
func (s *session) loopFrame(body []byte) error {
	m, h, err := ipc.Decode(body)
	if err == nil && h.ID != 0 && !servedInLoop(m) {
		return ipc.ErrDeferFrame
	}
	s.received(body)
	start := s.clock()
	kind, err := s.serveDecoded(m, h, err)
	s.handled(kind, start)
	s.payOwed()
	s.loop.requests.Add(1)
	if err != nil {
		return errEnded
	}
	if len(s.wbuf) >= maxReplies {
		return errLoopFull
	}
	return nil
}
