package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commy/commy/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrClosed: the bridge was closed.
var ErrClosed = errors.New("bridge: closed")

// Options are what New takes besides the Config.
type Options struct {
	Logger *slog.Logger
	// Resync ignores the saved state: the bridge replays the whole stream,
	// and local values that differ from it after the replay are published.
	Resync bool
	// ClientOptions are added to the local broker connection's options.
	ClientOptions []client.Option
}

// Bridge mirrors the federated services of one host's broker through a
// JetStream stream. New starts it; Close stops it. Its methods are safe for
// concurrent use.
//
// There is no central goroutine: each service's watcher handles its notices
// and publishes the batch itself, the consumer applies the stream's
// messages as it reads them, and JetStream's acknowledgement sends the next
// batch, each under mu. A change thus crosses no goroutine of the bridge's
// own on its way from the broker to NATS or from NATS to the broker.
type Bridge struct {
	cfg   Config
	log   *slog.Logger
	stats *stats
	runID string
	msgN  atomic.Uint64

	cl    *client.Client
	nc    *nats.Conn
	js    jetstream.JetStream // stream management and the consumer
	pubJS jetstream.JetStream // publishes, acknowledged through onAck and onPubErr

	out      outbox        // batches until JetStream acknowledges them
	pubRetry chan struct{} // a token when a publish failed: the retrier sends it again
	ready    chan struct{} // closed once Ready
	stat     atomic.Pointer[Status]

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the timer loop, the consumer, the retrier
	subWG     sync.WaitGroup // the services' watchers
	runErr    error          // why the bridge stopped; set before loopDone closes
	loopDone  chan struct{}
	closeOnce sync.Once

	errMu   sync.Mutex
	pubErrs []pubErr // failed publishes, for the retrier

	// mu guards everything below. The methods that use those fields expect
	// it held; only New, Close and the bodies of the goroutines and
	// callbacks (loop, consume, retrier, watch, onAck, onPubErr) take it.
	mu         sync.Mutex
	st         *state
	svcs       map[svcKey]*localSvc
	known      map[svcKey]map[string]digest  // what the stream holds or will: applied, queued
	pendingOwn map[svcKey]map[string]int     // this run's batches not yet seen in the stream, by variable
	awaiting   map[string]*ownBatch          // the same, by message id
	startDiff  map[svcKey]map[string]*digest // local changes made while the bridge was away (nil: deleted)
	caughtUp   bool
	paused     bool
	gate       chan struct{} // closed while local notices are taken: caught up and not paused
	pubBackoff bool          // the head failed; the retrier sends it again after a pause
	pubTries   int           // failed attempts of the head
	dirty      bool
	lastLag    time.Duration
}

// ownBatch is a batch this run published, until it is seen in the stream.
type ownBatch struct {
	k    svcKey
	kind uint8
	vars map[string]*digest // nil digest: deleted
}

// remoteMsg is one message of the stream, or news from the consumer.
type remoteMsg struct {
	seq   uint64
	id    string
	b     *batch
	reset bool // the stream was made again: forget the saved position
}

// pubErr is a publish that JetStream did not acknowledge.
type pubErr struct {
	msg *nats.Msg
	err error
}

// New connects to the local broker and to NATS (waiting for neither: NATS
// may come later) and starts mirroring. The local broker must be up.
func New(ctx context.Context, cfg Config, opts Options) (*Bridge, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Socket == "" {
		return nil, fmt.Errorf("%w: socket not set", ErrConfig)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("bridge: state dir: %w", err)
	}
	st := newState()
	if !opts.Resync {
		var err error
		if st, err = loadState(cfg.StateDir, cfg.HostID, cfg.JetStream.Stream); err != nil {
			return nil, err
		}
	}
	var rb [6]byte
	rand.Read(rb[:])
	b := &Bridge{
		cfg: cfg, log: opts.Logger.With("host", cfg.HostID), stats: newStats(), runID: hex.EncodeToString(rb[:]),
		pubRetry: make(chan struct{}, 1), ready: make(chan struct{}), loopDone: make(chan struct{}), gate: make(chan struct{}),
		st: st, svcs: map[svcKey]*localSvc{}, known: map[svcKey]map[string]digest{},
		pendingOwn: map[svcKey]map[string]int{}, awaiting: map[string]*ownBatch{}, startDiff: map[svcKey]map[string]*digest{},
	}
	for k, vars := range st.Vars {
		m := make(map[string]digest, len(vars))
		for n, d := range vars {
			m[n] = d.Digest
		}
		b.known[k] = m
	}
	b.stats.lastSeq.Set(float64(st.LastSeq))
	b.ctx, b.cancel = context.WithCancel(context.Background())

	copts := append([]client.Option{client.WithName("commy-bridge " + cfg.HostID), client.WithReconnect(client.Backoff{Max: time.Second})}, opts.ClientOptions...)
	cl, err := client.Dial(ctx, cfg.Socket, copts...)
	if err != nil {
		b.cancel()
		return nil, fmt.Errorf("bridge: local broker: %w", err)
	}
	b.cl = cl
	nc, err := nats.Connect(joinURLs(cfg.NATS.URLs), b.natsOptions()...)
	if err != nil {
		cl.Close()
		b.cancel()
		return nil, fmt.Errorf("bridge: nats: %w", err)
	}
	b.nc = nc
	// One publish in flight at a time, acknowledged within 5s: a batch that
	// failed is sent again (with its message id) before anything after it,
	// so the stream keeps this host's order.
	pubOpts := []jetstream.JetStreamOpt{jetstream.WithPublishAsyncAckHandler(b.onAck),
		jetstream.WithPublishAsyncErrHandler(b.onPubErr), jetstream.WithPublishAsyncTimeout(5 * time.Second)}
	var js, pubJS jetstream.JetStream
	if cfg.JetStream.Domain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.JetStream.Domain)
		if err == nil {
			pubJS, err = jetstream.NewWithDomain(nc, cfg.JetStream.Domain, pubOpts...)
		}
	} else {
		js, err = jetstream.New(nc)
		if err == nil {
			pubJS, err = jetstream.New(nc, pubOpts...)
		}
	}
	b.js, b.pubJS = js, pubJS
	if nc.IsConnected() {
		b.stats.connected.Set(1) // ConnectHandler logs it
	} else {
		b.log.Warn("nats not reachable yet; retrying in the background", "urls", cfg.NATS.URLs)
	}

	// The services there are now, and what changed in them while the bridge
	// was away, before anything of the stream is applied.
	b.mu.Lock()
	err = b.scan(ctx)
	if err == nil {
		b.diffAtStart()
		b.publishStatus()
	}
	b.mu.Unlock()
	if err != nil {
		b.Close()
		return nil, err
	}

	b.wg.Add(3)
	go b.consume(st.LastSeq + 1)
	go b.retrier()
	go b.loop()
	return b, nil
}

func joinURLs(urls []string) string {
	s := ""
	for i, u := range urls {
		if i > 0 {
			s += ","
		}
		s += u
	}
	return s
}

// natsOptions are the connection's options: reconnect forever, and the
// credentials the config names.
func (b *Bridge) natsOptions() []nats.Option {
	c := b.cfg.NATS
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Duration(c.ReconnectWait)),
		nats.ConnectHandler(func(nc *nats.Conn) {
			b.stats.connected.Set(1)
			b.log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.stats.connected.Set(1)
			b.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			b.stats.connected.Set(0)
			if b.ctx.Err() == nil {
				b.log.Warn("nats disconnected; local changes are kept until it is back", "err", err)
			}
		}),
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKeySeed != "" {
		if o, err := nats.NkeyOptionFromSeed(c.NKeySeed); err == nil {
			opts = append(opts, o)
		} else {
			opts = append(opts, func(*nats.Options) error { return fmt.Errorf("nkey_seed %s: %w", c.NKeySeed, err) })
		}
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts
}

// Ready is closed once the bridge has caught up with the stream (or found
// NATS unreachable at start, in which case it catches up once NATS is back).
func (b *Bridge) Ready() <-chan struct{} { return b.ready }

// Done is closed when the bridge stopped, after Close or a fatal error
// (see Err).
func (b *Bridge) Done() <-chan struct{} { return b.loopDone }

// Err is why the bridge stopped, or nil while it runs or after Close.
func (b *Bridge) Err() error {
	select {
	case <-b.loopDone:
		return b.runErr
	default:
		return nil
	}
}

// Close stops the bridge, saves its state and closes its connections.
// Batches not yet acknowledged by JetStream stay with the broker: the next
// run finds them as local changes. It is safe to call more than once.
func (b *Bridge) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.cancel()
		b.wg.Wait()
		b.subWG.Wait() // the watchers end with b.ctx
		if b.nc != nil {
			b.nc.Close()
		}
		if b.cl != nil {
			b.cl.Close()
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.dirty {
			err = b.st.save(b.cfg.StateDir, b.cfg.HostID, b.cfg.JetStream.Stream)
		}
	})
	return err
}

// loop does what comes with time: it scans for new services, saves the
// state (writing the file outside mu, so that a slow fsync holds up no
// change) and refreshes the status.
func (b *Bridge) loop() {
	defer b.wg.Done()
	defer close(b.loopDone)
	scan := time.NewTicker(time.Duration(b.cfg.ScanInterval))
	defer scan.Stop()
	flush := time.NewTicker(100 * time.Millisecond)
	defer flush.Stop()
	readyTimer := time.NewTimer(10 * time.Second)
	defer readyTimer.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-readyTimer.C:
			b.mu.Lock()
			if !b.caughtUp {
				b.log.Warn("not caught up with the stream yet; reporting ready, local changes are kept until NATS answers")
				b.markReady()
			}
			b.mu.Unlock()
		case <-scan.C:
			b.mu.Lock()
			if err := b.scan(b.ctx); err != nil && b.ctx.Err() == nil {
				b.log.Warn("scan of local services failed", "err", err)
			}
			b.mu.Unlock()
		case <-flush.C:
			b.mu.Lock()
			var data []byte
			var err error
			if b.dirty {
				data, err = b.st.marshal(b.cfg.HostID, b.cfg.JetStream.Stream)
				b.dirty = false
			}
			b.publishStatus()
			b.mu.Unlock()
			if err == nil && data != nil {
				err = writeState(b.cfg.StateDir, data)
			}
			if err != nil {
				b.log.Error("state not saved", "err", err)
				b.mu.Lock()
				b.dirty = true
				b.mu.Unlock()
			}
		}
	}
}

// setGateLocked opens the gate for local notices when the bridge is caught
// up and not paused, and shuts it otherwise.
func (b *Bridge) setGateLocked() {
	open := b.caughtUp && !b.paused
	select {
	case <-b.gate:
		if !open {
			b.gate = make(chan struct{})
		}
	default:
		if open {
			close(b.gate)
		}
	}
}

func (b *Bridge) markReady() {
	select {
	case <-b.ready:
	default:
		close(b.ready)
	}
}

// catchUpDone publishes what changed locally while the bridge was away and
// what no batch carried yet, then takes local notices.
func (b *Bridge) catchUpDone() {
	b.caughtUp = true
	b.setGateLocked()
	for k, ls := range b.svcs {
		b.reconcile(k, ls)
	}
	b.startDiff = map[svcKey]map[string]*digest{}
	b.log.Info("caught up with the stream", "sequence", b.st.LastSeq, "services", len(b.svcs))
	b.markReady()
	b.publishStatus()
}

// opCtx bounds one call to the local broker.
func (b *Bridge) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 10*time.Second)
}

// retry runs op until it succeeds, fails with the broker's answer, or the
// bridge closes; while the broker is away it waits for the reconnection.
func (b *Bridge) retry(what string, op func(ctx context.Context) error) error {
	for n := 0; ; n++ {
		ctx, cancel := b.opCtx()
		err := op(ctx)
		cancel()
		var re *client.Error
		if err == nil || errors.As(err, &re) || b.ctx.Err() != nil {
			return err
		}
		if n == 0 || n%20 == 0 {
			b.log.Warn("local broker unreachable; retrying", "op", what, "err", err)
		}
		wctx, wcancel := context.WithTimeout(b.ctx, time.Second)
		b.cl.WaitConnected(wctx)
		wcancel()
		select {
		case <-b.ctx.Done():
			return b.ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Status is a snapshot of what the bridge is doing.
type Status struct {
	HostID         string   `json:"host_id"`
	NATS           string   `json:"nats"`
	NATSURL        string   `json:"nats_url,omitempty"`
	Stream         string   `json:"stream"`
	CaughtUp       bool     `json:"caught_up"`
	AppliedSeq     uint64   `json:"applied_sequence"`
	Services       []string `json:"services"`
	PendingBatches int      `json:"pending_batches"`
	PendingBytes   int64    `json:"pending_bytes"`
	Paused         bool     `json:"paused"`
	LastLag        string   `json:"last_lag"`
	Published      uint64   `json:"published_batches"`
	Applied        uint64   `json:"applied_batches"`
	Conflicts      uint64   `json:"conflicts_resolved"`
	Refused        uint64   `json:"refused_values"`
}

// Status returns the latest snapshot (refreshed every 100ms).
func (b *Bridge) Status() Status {
	s := *b.stat.Load()
	s.NATS = b.nc.Status().String()
	s.NATSURL = b.nc.ConnectedUrlRedacted()
	s.PendingBatches, s.PendingBytes = b.out.len()
	s.Published, s.Applied = metricValue(b.stats.published), metricValue(b.stats.applied)
	s.Conflicts, s.Refused = metricValue(b.stats.conflicts), b.stats.refusedTotal()
	return s
}

func (b *Bridge) publishStatus() {
	s := &Status{HostID: b.cfg.HostID, Stream: b.cfg.JetStream.Stream, CaughtUp: b.caughtUp, AppliedSeq: b.st.LastSeq,
		Paused: b.paused, LastLag: b.lastLag.String()}
	for k := range b.svcs {
		s.Services = append(s.Services, k.String())
	}
	slices.Sort(s.Services)
	b.stat.Store(s)
}
