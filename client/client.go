package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commy/commy/internal/ipc"
)

// Option configures Dial.
type Option func(*options)

type options struct {
	name      string
	maxFrame  int
	timeout   time.Duration
	reconnect *Backoff
}

// WithName sets the client_name sent in Hello.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithMaxFrame bounds the frames the client accepts (default 16 MiB).
func WithMaxFrame(n int) Option { return func(o *options) { o.maxFrame = n } }

// WithTimeout bounds each request made without a context deadline of its
// own, such as reads of a Mapping that fell back to the socket: both writing
// it and waiting for the reply (default 10s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Client is a connection to the broker. It is safe for concurrent use.
//
// Without WithReconnect a lost connection ends the client: every request
// fails with ErrDisconnected and Done is closed. With it, the client redials
// in the background; requests made while it is away fail at once with
// ErrDisconnected, and Subscriptions and Mappings carry on once it is back.
type Client struct {
	opts options
	path string

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	nextID atomic.Uint64

	mu      sync.Mutex
	link    *link // the working connection; nil while there is none
	welcome ipc.Welcome
	err     error         // why there is no link; nil while there is one
	final   bool          // no link will come again
	up      chan struct{} // closed while link is set; replaced when it goes
	groups  map[string]*subGroup
	maps    map[*Mapping]struct{} // local mappings, checked after a reconnect

	subSem chan struct{} // one Subscribe, Unsubscribe or restore at a time

	wg        sync.WaitGroup // the supervisor and Watch goroutines
	done      chan struct{}  // closed once final
	closeOnce sync.Once
}

// link is one connection to the broker and the requests waiting on it.
type link struct {
	conn     *ipc.Conn
	welcome  ipc.Welcome
	maxFrame int // the broker's limit on request bodies; 0 until Welcome

	pending map[uint64]chan result // guarded by Client.mu; nil once the reader ended
	err     error                  // why it ended; guarded by Client.mu
	done    chan struct{}          // closed when the reader goroutine returns

	// Used by the reader goroutine only.
	lastErr error           // the broker's last connection-level Error
	subsBuf []*Subscription // recipients of one notice

	wsem    chan struct{} // the right to encode and write; holds enc
	enc     ipc.Encoder
	dmu     sync.Mutex // guards the write deadline against cancellation callbacks
	wseq    uint64     // which write is under way
	writing bool
}

type result struct {
	msg  ipc.Message
	file *os.File
	err  error
}

// Dial connects to the broker listening at socketPath and says Hello. It
// fails if the broker is not there, even with WithReconnect.
func Dial(ctx context.Context, socketPath string, opts ...Option) (*Client, error) {
	o := options{maxFrame: ipc.DefaultMaxFrame, timeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.reconnect != nil {
		b := o.reconnect.withDefaults()
		o.reconnect = &b
	}
	c := &Client{
		opts: o, path: socketPath,
		up: make(chan struct{}), groups: map[string]*subGroup{}, maps: map[*Mapping]struct{}{},
		subSem: make(chan struct{}, 1), done: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	l, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	if err := c.publish(l); err != nil {
		l.close()
		c.cancel()
		return nil, fmt.Errorf("client: dial %s: %w", c.path, err)
	}
	c.wg.Add(1)
	go c.supervise(l)
	return c, nil
}

// connect dials, starts the reader and says Hello. The link is not yet the
// client's: only the caller sends on it.
func (c *Client) connect(ctx context.Context) (*link, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.path, err)
	}
	conn, err := ipc.NewConn(nc.(*net.UnixConn), c.opts.maxFrame, true)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("client: dial %s: %w", c.path, err)
	}
	l := &link{conn: conn, pending: map[uint64]chan result{}, done: make(chan struct{}), wsem: make(chan struct{}, 1)}
	go c.readLoop(l)
	w, err := callOn[*ipc.Welcome](ctx, c, l, &ipc.Hello{Protocol: ipc.ProtocolVersion, ClientName: c.opts.name})
	if err == nil && w.Protocol != ipc.ProtocolVersion {
		err = fmt.Errorf("%w: broker speaks protocol %d, want %d", ErrProtocol, w.Protocol, ipc.ProtocolVersion)
	}
	if err != nil {
		l.close()
		return nil, fmt.Errorf("client: hello: %w", err)
	}
	l.welcome = *w
	l.maxFrame = int(min(w.MaxFrame, math.MaxInt32))
	return l, nil
}

// close closes the connection and waits for its reader.
func (l *link) close() {
	l.conn.Close()
	<-l.done
}

// publish makes l the client's connection. It fails if Close came first or
// l's reader has already ended: a dead link is never published, so the
// reader's end (which resets up only for the published link) and publish
// (which closes up) alternate, under c.mu.
func (c *Client) publish(l *link) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	if l.pending == nil { // the reader ended; l.err says why
		return l.err
	}
	c.link, c.welcome, c.err = l, l.welcome, nil
	close(c.up)
	return nil
}

// supervise waits for each connection to end and, with WithReconnect, makes
// the next one. It is the only goroutine that replaces the link.
func (c *Client) supervise(l *link) {
	defer c.wg.Done()
	for {
		<-l.done
		if c.opts.reconnect == nil || c.ctx.Err() != nil {
			break
		}
		if l = c.reconnect(); l == nil {
			break
		}
	}
	c.finish()
}

// finish marks the client ended for good and ends its subscriptions.
func (c *Client) finish() {
	c.mu.Lock()
	if c.ctx.Err() != nil || c.err == nil {
		c.err = ErrClosed
	}
	err := c.err
	c.final = true
	groups := c.groups
	c.groups = map[string]*subGroup{}
	c.mu.Unlock()
	for _, g := range groups {
		for s := range g.subs {
			s.end(err)
		}
	}
	close(c.done)
}

// Welcome is the broker's answer to the last Hello: its version, and who the
// kernel says this client is.
func (c *Client) Welcome() Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return welcomeOf(c.welcome)
}

// Close closes the connection, stops reconnecting, ends every subscription
// and waits for every goroutine the client started. Mappings stay usable
// where they are local; close them separately. It is safe to call more than
// once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.mu.Lock()
		l := c.link
		c.mu.Unlock()
		if l != nil {
			l.conn.Close()
		}
		c.wg.Wait()
	})
	return nil
}

// Done is closed once the client has ended for good: after Close, or when
// the connection is lost without WithReconnect.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the client is not connected (ErrClosed, or an error matching
// ErrDisconnected), or nil while it is.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// WaitConnected waits until the client is connected, for use after a
// disconnection with WithReconnect. It returns at once when connected, and
// the reason when the client has ended for good or ctx is done first.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	up, final, err := c.up, c.final, c.err
	c.mu.Unlock()
	if final {
		return err
	}
	select {
	case <-up:
		return nil
	case <-c.done:
		return c.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) readLoop(l *link) {
	defer close(l.done)
	var err error
	for {
		var body []byte
		if body, err = l.conn.ReadFrame(); err != nil {
			break
		}
		m, h, derr := ipc.Decode(body)
		if derr != nil {
			err = fmt.Errorf("%w: broker sent a bad frame: %w", ErrProtocol, derr)
			break
		}
		var file *os.File
		if _, ok := m.(*ipc.ServiceFilePath); ok {
			file, _ = l.conn.TakeFD()
		}
		if h.ID == 0 {
			if file != nil {
				file.Close()
			}
			c.push(l, m)
			continue
		}
		c.mu.Lock()
		ch := l.pending[h.ID]
		delete(l.pending, h.ID)
		c.mu.Unlock()
		if ch == nil {
			if file != nil {
				file.Close() // the caller gave up waiting
			}
			continue
		}
		ch <- result{msg: m, file: file} // buffered: never blocks
	}
	l.conn.ReleaseFDs()
	l.conn.Close()
	switch {
	case c.ctx.Err() != nil:
		err = ErrClosed
	case l.lastErr != nil:
		err = fmt.Errorf("%w: %w", ErrDisconnected, l.lastErr)
	default:
		err = fmt.Errorf("%w: %w", ErrDisconnected, local(err))
	}
	c.mu.Lock()
	pending := l.pending
	l.pending, l.err = nil, err
	if c.link == l {
		c.link, c.err = nil, err
		c.up = make(chan struct{})
	}
	c.mu.Unlock()
	// Whoever removes a request from pending sends it its one result.
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

// push routes a message the broker sent on its own.
func (c *Client) push(l *link, m ipc.Message) {
	switch m := m.(type) {
	case *ipc.VariablesUpdated:
		n := min(len(m.Variables), len(m.Versions))
		c.mu.Lock()
		if g := c.groups[m.ServiceID]; g != nil {
			g.sawLocked(m.Variables[:n], m.Versions[:n])
			for s := range g.subs {
				l.subsBuf = append(l.subsBuf, s)
			}
		}
		c.mu.Unlock()
		for _, s := range l.subsBuf {
			s.deliver(m.Variables[:n], m.Versions[:n])
		}
		clear(l.subsBuf)
		l.subsBuf = l.subsBuf[:0]
	case *ipc.SubscriptionEnded:
		// The broker ended the subscription (a policy reload withdrew the
		// right): every Subscription to the service ends with the reason.
		c.mu.Lock()
		if g := c.groups[m.ServiceID]; g != nil {
			for s := range g.subs {
				l.subsBuf = append(l.subsBuf, s)
			}
		}
		delete(c.groups, m.ServiceID)
		c.mu.Unlock()
		err := &Error{Code: m.ErrorCode, Message: m.Message}
		for _, s := range l.subsBuf {
			s.end(err)
		}
		clear(l.subsBuf)
		l.subsBuf = l.subsBuf[:0]
	case *ipc.Error:
		// A connection-level error (FRAME_TOO_LARGE, PROTOCOL_ERROR): the
		// broker closes the connection next; the reader reports it then.
		l.lastErr = remoteError(m)
	}
}

// do sends a request on the current connection and waits for its reply. An
// Error reply is returned as the reply; as turns it into an *Error.
func (c *Client) do(ctx context.Context, req ipc.Message) (ipc.Message, *os.File, error) {
	c.mu.Lock()
	l, err := c.link, c.err
	c.mu.Unlock()
	if l == nil {
		return nil, nil, err
	}
	return c.doOn(ctx, l, req)
}

// doOn sends a request on l and waits for its reply.
func (c *Client) doOn(ctx context.Context, l *link, req ipc.Message) (ipc.Message, *os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	id := c.nextID.Add(1)
	req.Hdr().ID = id
	ch := make(chan result, 1)
	c.mu.Lock()
	if l.pending == nil {
		err := l.err
		c.mu.Unlock()
		return nil, nil, err
	}
	l.pending[id] = ch
	c.mu.Unlock()

	if err := c.send(ctx, l, req); err != nil {
		c.abandon(l, id, ch)
		return nil, nil, err
	}
	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok && c.opts.timeout > 0 {
		t := time.NewTimer(c.opts.timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-ch:
		return r.msg, r.file, r.err
	case <-ctx.Done():
		c.abandon(l, id, ch)
		return nil, nil, ctx.Err()
	case <-timeout:
		c.abandon(l, id, ch)
		return nil, nil, fmt.Errorf("client: %s: no reply within %v: %w", req.Kind(), c.opts.timeout, context.DeadlineExceeded)
	}
}

// abandon drops a request nobody will wait for. If its result was already
// taken from pending it is on its way to ch: take it and close its file.
func (c *Client) abandon(l *link, id uint64, ch chan result) {
	c.mu.Lock()
	_, waiting := l.pending[id]
	delete(l.pending, id)
	c.mu.Unlock()
	if !waiting {
		if r := <-ch; r.file != nil {
			r.file.Close()
		}
	}
}

// longAgo is a deadline in the past: it makes a blocked write return.
var longAgo = time.Unix(1, 0)

// send encodes and writes req. Waiting for the turn to write honours ctx;
// the write itself gets ctx's deadline (else the client's timeout), and
// cancellation becomes a deadline in the past. A write cut short after some bytes leaves a partial frame
// that cannot be taken back, so it closes the connection.
func (c *Client) send(ctx context.Context, l *link, req ipc.Message) error {
	select {
	case l.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.wsem }()
	frame, err := l.enc.Frame(req)
	if err != nil {
		return fmt.Errorf("client: %w", local(err))
	}
	if n := len(frame) - ipc.HeaderLen; l.maxFrame > 0 && n > l.maxFrame {
		return fmt.Errorf("client: %s of %d bytes passes the broker's %d-byte limit: %w", req.Kind(), n, l.maxFrame, ErrFrameTooLarge)
	}
	uc := l.conn.UnixConn()
	dl, ok := ctx.Deadline()
	if !ok && c.opts.timeout > 0 {
		dl = time.Now().Add(c.opts.timeout)
	}
	l.dmu.Lock()
	l.wseq++
	seq := l.wseq
	l.writing = true
	uc.SetWriteDeadline(dl) // the zero time: none
	l.dmu.Unlock()
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			l.dmu.Lock()
			if l.writing && l.wseq == seq { // not a later write's
				uc.SetWriteDeadline(longAgo)
			}
			l.dmu.Unlock()
		})
	}
	defer func() {
		stop()
		l.dmu.Lock()
		l.writing = false
		l.dmu.Unlock()
	}()
	// Only this function writes on the connection, one caller at a time.
	n, err := uc.Write(frame)
	if err == nil {
		return nil
	}
	if n > 0 {
		l.conn.Close()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("client: %s: not written within %v: %w", req.Kind(), c.opts.timeout, context.DeadlineExceeded)
	}
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	return fmt.Errorf("%w: write: %w", ErrDisconnected, err)
}

// call sends req on the current connection and decodes a reply of type T.
func call[T ipc.Message](ctx context.Context, c *Client, req ipc.Message) (T, error) {
	m, file, err := c.do(ctx, req)
	return decode[T](m, file, err)
}

// callOn is call on a given link.
func callOn[T ipc.Message](ctx context.Context, c *Client, l *link, req ipc.Message) (T, error) {
	m, file, err := c.doOn(ctx, l, req)
	return decode[T](m, file, err)
}

func decode[T ipc.Message](m ipc.Message, file *os.File, err error) (T, error) {
	if file != nil {
		file.Close()
	}
	if err != nil {
		var zero T
		return zero, err
	}
	return as[T](m)
}

// remote reports whether err is the broker's answer rather than a failure
// to reach it.
func remote(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
