package broker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// Caller is who is at the other end of a connection, as the kernel reported it
// at accept (SO_PEERCRED, SO_PEERGROUPS).
type Caller struct {
	ClientID uint64
	PID      int32
	UID, GID uint32
	Groups   []uint32 // supplementary groups at connect(2), when the kernel says
	Exe      string   // advisory: see peerExe
	Name     string   // client_name from Hello, as the client claims it

	groupsKnown bool // Groups came from the kernel; else the user database decides
}

// peerExe is the executable of the process pid, read from /proc after
// accept. It is advisory: a process may execve(2) after connect(2). With a
// pidfd of the peer (SO_PEERPIDFD) it is "" when the process exited before
// it was read, since its pid may then name another process.
func peerExe(pid int32, pidfd *os.File) string {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/exe")
	if err != nil || pidfd != nil && !ipc.PidfdAlive(pidfd) {
		return ""
	}
	return exe
}

// session serves one connection. Its reader goroutine decodes requests,
// handles them inline and writes the replies; a writer goroutine, started
// the first time one is needed, sends the notices that could not be written
// at once.
type session struct {
	b      *Broker
	sock   *ipc.InputPolled
	conn   *ipc.Conn
	caller Caller
	cred   ipc.Cred
	user   *account // the uid's account

	// Used by the reader goroutine only.
	enc     ipc.Encoder
	wbuf    []byte
	readBuf []byte
	vers    []uint64
	code    string      // error code of the request being handled, "" for none
	owed    []*session  // outboxes this session must deliver (payOwed)
	wakes   []*shm.File // files whose mapped waiters this session must wake
	sc      scratch
	frameFn func([]byte) error // frame, made once
	wcharge int                // bytes of wbuf charged to user

	// While the loop serves the connection (see loop), the loop's goroutine
	// uses what the reader does, and these.
	loopFn    func([]byte) error // loopFrame, made once
	resume    chan error         // the loop hands the connection back
	loop      *loop              // the loop that has it, or had it last
	slot      uint32             // in that loop's slots
	lastIn    time.Time          // for the idle timeout
	frameFrom time.Time          // when the unfinished frame in the loop began
	rest      []byte             // of the replies, what the loop could not write
	back      bool               // to be handed back at the end of the pass
	backErr   error

	subMu sync.Mutex
	subs  map[string]*service // by service id

	writer sync.WaitGroup // the writer goroutine, once the outbox started it

	out       outbox
	done      chan struct{} // closed when the writer must stop
	closeOnce sync.Once
	doneOnce  sync.Once
	overOnce  sync.Once
}

func newSession(b *Broker, sock *ipc.InputPolled, cred ipc.Cred, u *account) *session {
	s := &session{b: b, sock: sock, cred: cred, user: u, subs: map[string]*service{}, done: make(chan struct{}), out: newOutbox(u)}
	s.out.start = func() { s.writer.Go(s.writeLoop) }
	if len(b.loops) > 0 {
		s.resume = make(chan error, 1)
		s.loopFn = s.loopFrame
	}
	return s
}

// stopReading makes the reader see end of input after the request it is
// handling, for a graceful shutdown.
func (s *session) stopReading() { s.sock.CloseRead() }

// close ends the connection at once: both directions are shut down, which
// wakes its reader and writer, and serve closes the descriptor when they are
// done. It never waits, so it is safe under any lock, from the session's own
// reader too, and more than once.
func (s *session) close() { s.closeOnce.Do(func() { s.sock.Shutdown() }) }

func (s *session) serve() {
	defer s.b.dropSession(s)
	defer s.user.disconnect()
	defer s.sock.Close()
	defer s.close()
	cred := s.cred
	conn, err := ipc.NewConn(s.sock, s.b.cfg.MaxFrame, false)
	if err != nil {
		s.b.log.Error("connection dropped", "err", err)
		return
	}
	s.conn = conn
	s.frameFn = s.frame
	conn.SetWriteTimeout(s.b.cfg.WriteTimeout)
	conn.SetBudget(s.user)
	defer conn.ReleaseBuffer()
	defer s.releaseReplies()
	defer conn.ReleaseFDs()
	s.caller = Caller{ClientID: s.b.nextID.Add(1), PID: cred.PID, UID: cred.UID, GID: cred.GID}
	s.caller.Groups, err = ipc.PeerGroups(s.sock)
	s.caller.groupsKnown = err == nil
	if err != nil && !errors.Is(err, ipc.ErrNotSupported) {
		s.b.log.Error("connection dropped: no peer groups", "err", err)
		return
	}
	switch pidfd, err := ipc.PeerPidfd(s.sock); {
	case err == nil:
		s.caller.Exe = peerExe(cred.PID, pidfd)
		pidfd.Close()
	case errors.Is(err, ipc.ErrNotSupported):
		s.caller.Exe = peerExe(cred.PID, nil)
	default: // ESRCH: gone already, and its pid may be another's
	}
	s.b.stats.connections.Add(1)
	s.b.stats.accepted.Add(1)
	defer s.b.stats.connections.Add(-1)
	s.b.log.Debug("connect", "client_id", s.caller.ClientID, "pid", cred.PID, "uid", cred.UID, "gid", cred.GID, "exe", s.caller.Exe)
	// A connection's connect and disconnect records are written in full,
	// or both counted in its uid's summary (see flood).
	full := s.b.connFlood.allow(cred.UID, cred.GID, EventConnect, "")
	if full {
		s.auditf(Record{Event: EventConnect})
	}
	defer func() {
		s.b.log.Debug("disconnect", "client_id", s.caller.ClientID, "pid", cred.PID)
		if full {
			s.auditf(Record{Event: EventDisconnect})
		} else {
			s.b.connFlood.suppress(cred.UID, cred.GID, EventDisconnect)
		}
	}()

	if !s.handshake() {
		return
	}
	s.readLoop()
	s.unsubscribeAll()
	// The writer may be stuck on a peer that half-closed and stopped
	// reading: give it a moment to finish, never longer.
	s.conn.SetWriteDeadline(time.Now().Add(lingerTimeout))
	s.doneOnce.Do(func() { close(s.done) })
	s.out.end()
	s.writer.Wait()
	s.out.settle()
}

// lingerTimeout bounds how long a session that stopped reading may still
// spend writing what it owes.
const lingerTimeout = time.Second

// handshake reads Hello and answers Welcome, or PROTOCOL_ERROR.
func (s *session) handshake() bool {
	s.conn.SetReadDeadline(time.Now().Add(s.b.cfg.HandshakeTimeout))
	s.conn.SetMaxFrame(maxHelloFrame)
	body, err := s.conn.ReadFrame()
	if err != nil {
		s.fatal(err)
		return false
	}
	s.received(body)
	start := s.clock()
	s.conn.SetReadDeadline(time.Time{})
	m, h, err := ipc.Decode(body)
	hello, ok := m.(*ipc.Hello)
	switch {
	case err != nil:
		s.replyErr(h.ID, fmt.Errorf("%w: first frame: %w", ipc.ErrProtocol, err))
	case !ok:
		s.replyErr(h.ID, fmt.Errorf("%w: first message must be Hello, not %s", ipc.ErrProtocol, h.Type))
	case hello.Protocol != ipc.ProtocolVersion:
		s.replyErr(h.ID, fmt.Errorf("%w: protocol %d not supported (this broker speaks %d)", ipc.ErrProtocol, hello.Protocol, ipc.ProtocolVersion))
	case len(hello.ClientName) > DefaultMaxClientName:
		s.replyErr(h.ID, fmt.Errorf("%w: client_name of %d bytes, limit %d", ipc.ErrInvalidRequest, len(hello.ClientName), DefaultMaxClientName))
	default:
		s.conn.SetMaxFrame(s.b.cfg.MaxFrame)
		s.conn.SetReadTimeouts(s.b.cfg.IdleTimeout, s.b.cfg.FrameTimeout)
		if s.cred.PID != int32(os.Getpid()) {
			// A client in the broker's own process shares its scheduler,
			// which passes the CPU between the two without a wake-up:
			// spinning would only keep a second CPU busy.
			s.conn.SetSpin(s.b.cfg.ReadSpin)
		}
		if len(s.b.loops) > 0 {
			s.conn.SetYield(loopYield)
		}
		s.caller.Name = hello.ClientName
		s.reply(&ipc.Welcome{
			Header: ipc.Header{ID: h.ID}, Protocol: ipc.ProtocolVersion, ServerVersion: Version,
			ClientID: s.caller.ClientID, PID: int64(s.caller.PID), UID: uint64(s.caller.UID), GID: uint64(s.caller.GID),
			MaxFrame: uint64(s.b.cfg.MaxFrame),
		}, nil)
		s.handled(h.Type, start)
		return s.flush() == nil
	}
	s.b.log.Debug("handshake failed", "client_id", s.caller.ClientID, "pid", s.caller.PID, "code", s.code)
	s.handled(h.Type, start)
	s.flush()
	return false
}

// fatal answers a framing error that ends the connection.
func (s *session) fatal(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, ipc.ErrClosed) || errors.Is(err, net.ErrClosed) {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = fmt.Errorf("%w: no Hello within %v", ipc.ErrProtocol, s.b.cfg.HandshakeTimeout)
	}
	if errors.Is(err, ipc.ErrFrameTooLarge) || errors.Is(err, ipc.ErrProtocol) || errors.Is(err, ipc.ErrQuotaExceeded) {
		if s.b.flood.allow(s.caller.UID, s.caller.GID, "(connection)", ipc.CodeOf(err)) {
			s.b.log.Info("connection closed on a protocol error", "client_id", s.caller.ClientID, "pid", s.caller.PID, "uid", s.caller.UID, "err", err)
		} else {
			s.b.stats.suppressed.Add(1)
		}
		s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.replyErr(0, err)
		s.flush()
	}
}

func (s *session) readLoop() {
	defer s.wakeReaders()
	for {
		err := s.conn.ServeFrames(s.frameFn)
		if errors.Is(err, ipc.ErrYield) {
			err = s.b.pickLoop().park(s)
			// Replies the loop could not write are the reader's to write.
			if ferr := s.finishReply(); ferr != nil && err == nil {
				err = errEnded
			}
			if !errors.Is(err, errEnded) && s.flush() != nil {
				return
			}
			if err == nil {
				continue
			}
		}
		if errors.Is(err, ipc.ErrIdle) && s.subscribed() {
			continue // the idle rule drops only connections without a subscription
		}
		if !errors.Is(err, errEnded) {
			s.fatal(err)
		}
		return
	}
}

// errEnded stops the reader quietly: the connection cannot be used.
var errEnded = errors.New("session ended")

// frame serves one request and flushes the replies once no whole request
// is left to read.
func (s *session) frame(body []byte) error {
	s.received(body)
	err := s.handleFrame(body)
	s.payOwed()
	if err != nil {
		return errEnded
	}
	if !s.conn.Buffered() || len(s.wbuf) >= 64<<10 {
		if s.flush() != nil {
			return errEnded
		}
	}
	return nil
}

// handleFrame decodes and serves one request, queuing its reply, and counts
// it. It fails only when the connection is unusable.
func (s *session) handleFrame(body []byte) error {
	start := s.clock()
	kind, err := s.serveFrame(body)
	s.handled(kind, start)
	return err
}

// serveFrame is handleFrame but for the counting; it returns the request's
// type as the frame names it.
func (s *session) serveFrame(body []byte) (string, error) {
	m, h, err := ipc.Decode(body)
	return s.serveDecoded(m, h, err)
}

// serveDecoded is serveFrame once the frame is decoded.
func (s *session) serveDecoded(m ipc.Message, h ipc.Header, err error) (string, error) {
	if err != nil {
		s.replyErr(h.ID, err)
		return h.Type, nil
	}
	if h.ID == 0 {
		s.replyErr(0, fmt.Errorf("%w: request id must not be 0", ipc.ErrInvalidRequest))
		return h.Type, nil
	}
	reply, file, err := s.handle(m)
	if err != nil {
		s.replyErr(h.ID, err)
		return h.Type, nil
	}
	reply.Hdr().ID = h.ID
	return h.Type, s.reply(reply, file)
}

// reply queues a reply; one that carries a descriptor is written at once.
func (s *session) reply(m ipc.Message, file *os.File) error {
	frame, err := s.enc.Frame(m)
	if err == nil && len(frame)-ipc.HeaderLen > s.b.cfg.MaxFrame {
		err = fmt.Errorf("%w: reply of %d bytes passes the %d-byte frame limit", ipc.ErrValueTooLarge, len(frame)-ipc.HeaderLen, s.b.cfg.MaxFrame)
	}
	if err != nil {
		if file != nil {
			file.Close()
		}
		if _, isErr := m.(*ipc.Error); isErr {
			return err
		}
		return s.replyErr(m.Hdr().ID, err)
	}
	if len(frame) > replyFree {
		if cerr := s.user.Charge(len(frame)); cerr != nil {
			if file != nil {
				file.Close()
			}
			return s.replyErr(m.Hdr().ID, fmt.Errorf("%w (replies waiting to be read)", cerr))
		}
		s.wcharge += len(frame)
	}
	if file == nil {
		s.wbuf = append(s.wbuf, frame...)
		return nil
	}
	defer file.Close()
	if err := s.flush(); err != nil {
		return err
	}
	err = s.conn.WriteFrame(frame, file)
	s.releaseReplies()
	if err != nil {
		return err
	}
	s.b.stats.bytesOut.Add(uint64(len(frame)))
	return nil
}

// releaseReplies discharges what replies charged once they are written.
func (s *session) releaseReplies() {
	if s.wcharge > 0 {
		s.user.Discharge(s.wcharge)
		s.wcharge = 0
	}
}

// subscribed reports whether the session holds a subscription.
func (s *session) subscribed() bool {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return len(s.subs) > 0
}

func (s *session) replyErr(id uint64, err error) error {
	code := ipc.CodeOf(err)
	s.code = code
	s.b.stats.failed(code)
	if code == "INTERNAL_ERROR" {
		s.b.log.Error("request failed", "client_id", s.caller.ClientID, "pid", s.caller.PID, "err", err)
	}
	return s.reply(&ipc.Error{Header: ipc.Header{ID: id}, ErrorCode: code, Message: err.Error()}, nil)
}

func (s *session) flush() error {
	if len(s.wbuf) == 0 {
		s.wakeReaders()
		return nil
	}
	// With mapped readers to wake: first if the files' last wake found
	// readers waiting (they most likely wait for this change too, and the
	// writer can wait one system call for its acknowledgement); else the
	// reply first if it goes out at once, then the wake. Either way a reply
	// that must wait for room never delays the readers.
	var done bool
	var err error
	if s.wakeWatched() {
		if beforeReply != nil {
			beforeReply()
		}
		done, err = s.conn.TryWrite(s.wbuf)
		s.wakeReaders()
	}
	if !done && err == nil {
		err = s.conn.WriteFrame(s.wbuf, nil)
	}
	s.releaseReplies()
	if err == nil {
		s.b.stats.bytesOut.Add(uint64(len(s.wbuf)))
	}
	if cap(s.wbuf) > 1<<20 {
		s.wbuf = nil
	} else {
		s.wbuf = s.wbuf[:0]
	}
	return err
}

// changed marks svc's file changed; the caller holds svc's lock. The wake
// of its mapped waiters is left to wakeReaders, after the lock is released,
// so that the lock never waits for the system call; it goes before the
// reply when the file's last wake found readers asleep, after it when not
// (see flush).
func (s *session) changed(svc *service) {
	svc.file.MarkChanged()
	if n := len(s.wakes); n == 0 || s.wakes[n-1] != svc.file {
		s.wakes = append(s.wakes, svc.file)
	}
}

// wakeWatched wakes the mapped readers of the files the session changed
// now, before the reply, if a file's last wake found readers waiting
// (shm.File.Watched); else it leaves them to wakeReaders. It reports
// whether the session owes any wake.
func (s *session) wakeWatched() bool {
	for _, f := range s.wakes {
		if f.Watched() {
			s.wakeReaders()
			return true
		}
	}
	return len(s.wakes) > 0
}

// beforeReply, for tests, runs before a reply that owes mapped readers a
// wake is written, after any wake that goes first.
var beforeReply func()

// wakeReaders wakes the mapped waiters of the files the session changed.
func (s *session) wakeReaders() {
	for i, f := range s.wakes {
		f.WakeWaiters()
		s.wakes[i] = nil
	}
	s.wakes = s.wakes[:0]
}

// auditf logs r with the caller's identity.
func (s *session) auditf(r Record) {
	uid, gid := s.caller.UID, s.caller.GID
	r.ClientID, r.PID, r.UID, r.GID = s.caller.ClientID, s.caller.PID, &uid, &gid
	if r.Event == EventConnect {
		r.Exe = s.caller.Exe
	}
	s.b.logAudit(r)
}

// Metrics of the reader goroutine.

// received counts the bytes of a frame read, length prefix included.
func (s *session) received(body []byte) {
	s.b.stats.bytesIn.Add(uint64(ipc.HeaderLen + len(body)))
}

// clock is when a request's handling starts, read only when the broker
// observes latencies.
func (s *session) clock() time.Time {
	if s.b.latency == nil {
		return time.Time{}
	}
	return time.Now()
}

// handled counts a request of type kind that started at start, with the
// outcome replyErr noted.
func (s *session) handled(kind string, start time.Time) {
	s.b.stats.request(kind, s.code)
	if s.b.latency != nil {
		s.b.latency.observe(kind, time.Since(start))
	}
	s.code = ""
}
