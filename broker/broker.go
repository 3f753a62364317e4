package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/paths"
	"github.com/commy/commy/internal/shm"
)

// Backends for service files.
const (
	BackendFile  = "file"  // files under the data directory, recovered on start
	BackendMemfd = "memfd" // sealed memfds, gone when the broker exits unless kept in an FDStore
)

// Version is the broker's version, reported in Welcome and Stats.
var Version = "0.1.0"

// Defaults.
const (
	DefaultMaxConnections   = 4096
	DefaultMaxSubscriptions = 1024
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultReadSpin         = 50 * time.Microsecond
	DefaultMetricsTenants   = 64
)

var (
	// ErrClosed is returned by Serve after Shutdown or Close.
	ErrClosed = errors.New("broker: closed")
	// ErrConfig: the configuration cannot be used.
	ErrConfig = errors.New("broker: bad configuration")
)

// Config configures a Broker. Zero values get the defaults.
type Config struct {
	DataDir          string        // required: service files (file backend) and the default audit log
	Backend          string        // BackendFile (default) or BackendMemfd
	Policy           *Policy       // nil: DefaultPolicy
	AuditLog         string        // default <DataDir>/audit.log
	MaxFrame         int           // default ipc.DefaultMaxFrame
	MaxConnections   int           // default DefaultMaxConnections
	MaxSubscriptions int           // per connection, default DefaultMaxSubscriptions
	HandshakeTimeout time.Duration // default DefaultHandshakeTimeout
	WriteTimeout     time.Duration // a peer that reads nothing for this long is dropped; default DefaultWriteTimeout
	ReadSpin         time.Duration // after a reply, read again this long before sleeping, for a client that answers fast (ipc.Conn.SetSpin); default DefaultReadSpin, negative: never
	NoIOURing        bool          // never use io_uring: one sendto per subscriber of a fan-out, and per read and reply of the event loop (ipc.SendBatch, ipc.ReadBatch)
	NoLoop           bool          // serve every connection from its own goroutine, never from the event loop (see loop)
	Loops            int           // event loops, each serving its share of the busy connections on one goroutine; default GOMAXPROCS
	Service          shm.Options   // sizes of new service files
	Logger           *slog.Logger
	Probe            Probe // optional eBPF audit probe

	// FDStore, with the memfd backend, keeps every tenant and service while
	// the broker restarts; see FDStore.
	FDStore FDStore
	// Restore are the descriptors an earlier broker put in the FDStore (memfd
	// backend). New restores their tenants and services, and closes every
	// one of them, even when it fails.
	Restore []StoredFD

	// Metrics makes the broker time every request for the latency
	// histograms of Collector. Off, the request path reads no clock.
	Metrics bool
	// Resource limits (see docs/security.md, "Resources"): zero gets the
	// default, a negative value means no limit.
	IdleTimeout            time.Duration // drop a connection with no subscription that sends nothing this long; default none
	FrameTimeout           time.Duration // a frame that has started must finish within this; default DefaultFrameTimeout
	MaxConnectionsPerUID   int           // default DefaultMaxConnectionsPerUID
	ReservedConnections    int           // of MaxConnections, only root and the broker's uid may use; default DefaultReservedConnections
	MaxBufferedPerUID      int64         // bytes in incomplete frames and unread replies; default DefaultMaxBufferedPerUID
	MaxSubscriptionsPerUID int           // default DefaultMaxSubscriptionsPerUID
	MaxFilterNamesPerUID   int           // variable names in subscription filters; default DefaultMaxFilterNamesPerUID
	FDReserve              int           // descriptors kept for root's connections and GetServiceFilePath; default DefaultFDReserve

	// Audit log limits (see docs/security.md): AuditMaxSize bytes before
	// the log rotates (default DefaultAuditMaxSize, negative: never),
	// keeping AuditKeep rotated files (default DefaultAuditKeep, negative:
	// none). AuditCoalesce is the interval over which one uid's denials (and,
	// separately, connections) past
	// DefaultAuditBurst are summed into one record (default
	// DefaultAuditCoalesce, negative: all in full). AuditStrict
	// refuses audited requests while the audit log cannot be written.
	AuditMaxSize  int64
	AuditKeep     int
	AuditCoalesce time.Duration
	AuditStrict   bool

	// MetricsTenants is how many tenants, the first by id, Collector labels
	// by name; the others are summed under tenant="_other". Default
	// DefaultMetricsTenants; negative labels none.
	MetricsTenants int
}

// Broker serves the commy protocol. It is safe for concurrent use.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	audit  *Audit
	policy atomic.Pointer[Policy]
	start  time.Time

	mu       sync.RWMutex
	tenants  map[string]*tenant
	services map[string]*service // by service id

	smu       sync.Mutex
	sessions  map[*session]struct{}
	listeners map[net.Listener]struct{}
	closing   bool
	nextID    atomic.Uint64
	sessWG    sync.WaitGroup // sessions and their goroutines
	wg        sync.WaitGroup // the probe reader
	closeOnce sync.Once

	stats   counters
	latency *latency      // nil unless Config.Metrics
	loops   []*loop       // none: every reader serves its own connection
	nextLp  atomic.Uint32 // where pickLoop starts looking

	refusedLogged atomic.Int64 // the second a refusal was last logged
	users         *users
	quota         quotaState
	fds           fdBudget
	flood         flood // denials
	connFlood     flood // connect and disconnect records
	floodStop     chan struct{}

	probeMu    sync.Mutex
	probeFiles map[fileKey]string // service id by file, for probe events

	fan   chan []*session // to the fan-out helpers (runFanout); nil on one CPU, or with uring
	uring bool            // fan-outs go through io_uring (ipc.SendBatch)
}

// New opens the data directory, recovers the services it holds (file
// backend) and opens the audit log.
func New(cfg Config) (*Broker, error) {
	defer func() {
		for _, fd := range cfg.Restore {
			fd.File.Close()
		}
	}()
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: no data directory", ErrConfig)
	}
	switch cfg.Backend {
	case "":
		cfg.Backend = BackendFile
	case BackendFile, BackendMemfd:
	default:
		return nil, fmt.Errorf("%w: backend %q (want %s or %s)", ErrConfig, cfg.Backend, BackendFile, BackendMemfd)
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = ipc.DefaultMaxFrame
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxSubscriptions <= 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	switch {
	case cfg.ReadSpin == 0:
		cfg.ReadSpin = DefaultReadSpin
	case cfg.ReadSpin < 0:
		cfg.ReadSpin = 0
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Policy == nil {
		cfg.Policy = DefaultPolicy()
	}
	limitDefaults(&cfg)
	if cfg.MetricsTenants == 0 {
		cfg.MetricsTenants = DefaultMetricsTenants
	}
	if cfg.AuditLog == "" {
		cfg.AuditLog = filepath.Join(cfg.DataDir, "audit.log")
	}
	if err := paths.MakeDir(cfg.DataDir, 0o700, os.Geteuid()); err != nil {
		return nil, fmt.Errorf("broker: data directory: %w", err)
	}
	b := &Broker{
		cfg: cfg, log: cfg.Logger, start: time.Now(),
		tenants: map[string]*tenant{}, services: map[string]*service{},
		sessions: map[*session]struct{}{}, listeners: map[net.Listener]struct{}{},
		probeFiles: map[fileKey]string{},
	}
	b.users = newUsers(userLimitsOf(cfg), uint32(os.Getuid()))
	b.initFDs()
	b.stats.init()
	if cfg.Metrics {
		b.latency = newLatency()
	}
	b.policy.Store(cfg.Policy)
	if cfg.Backend == BackendFile {
		if err := b.migrateTenants(); err != nil {
			return nil, err
		}
	}
	var err error
	if b.audit, err = OpenRotatingAudit(cfg.AuditLog, cfg.AuditMaxSize, cfg.AuditKeep, b.log); err != nil {
		return nil, err
	}
	if err := b.recover(); err != nil {
		b.audit.Close()
		b.closeFiles()
		return nil, err
	}
	if cfg.Probe != nil {
		b.wg.Add(1)
		go b.readProbe()
	}
	b.flood = flood{interval: cfg.AuditCoalesce, burst: DefaultAuditBurst, what: "denials"}
	b.connFlood = flood{interval: cfg.AuditCoalesce, burst: DefaultAuditBurst, what: "connections"}
	b.floodStop = make(chan struct{})
	if cfg.AuditCoalesce > 0 {
		b.wg.Go(func() { b.runFlood(b.floodStop) })
	}
	if !cfg.NoIOURing {
		if err := ipc.IOURing(); err != nil {
			b.log.Info("io_uring not available: a fan-out makes one system call per subscriber", "err", err)
		} else {
			b.uring = true
		}
	}
	if !cfg.NoLoop {
		n := cfg.Loops
		if n <= 0 {
			n = runtime.GOMAXPROCS(0) // a loop for each CPU the broker runs on
		}
		for range n {
			l, err := newLoop(cfg.IdleTimeout, cfg.FrameTimeout, !b.uring)
			if err != nil {
				b.log.Info("no event loop: every connection is served by its own goroutine", "err", err)
				b.closeLoops()
				b.loops = nil
				break
			}
			b.loops = append(b.loops, l)
		}
		for _, l := range b.loops {
			b.wg.Go(l.run)
		}
	}
	// Through io_uring one goroutine writes a fan-out faster than two
	// sharing it: the helpers are for one system call per subscriber.
	if n := runtime.GOMAXPROCS(0) - 1; n > 0 && !b.uring {
		b.fan = make(chan []*session, n)
		for range n {
			b.wg.Go(func() { runFanout(b.fan) })
		}
	}
	return b, nil
}

// ReopenAudit makes the audit log reopen its path before the next record,
// after logrotate moved the file. It is safe for concurrent use.
func (b *Broker) ReopenAudit() { b.audit.Reopen() }

// SetPolicy replaces the policy for every request from now on. It counts as
// a successful policy reload.
// Subscriptions the new policy no longer allows end, each with a
// SubscriptionEnded push and an audit record (see revoke).
func (b *Broker) SetPolicy(p *Policy) {
	b.policy.Store(p)
	b.stats.reloads.Add(1)
	b.stats.reloadFailing.Store(false)
	b.logAudit(Record{Event: EventAdmin, Request: "policy_reload"})
	b.revoke(p)
}

// ReloadPolicy reads the policy file again (see LoadPolicy) and puts it in
// place. A file that cannot be used leaves the current policy in place; the
// error says why and is counted in the metrics and Stats. It is safe for
// concurrent use.
func (b *Broker) ReloadPolicy(file string) error {
	p, err := LoadPolicy(file)
	if err != nil {
		b.stats.reloadErrors.Add(1)
		b.stats.reloadFailing.Store(true)
		return err
	}
	b.SetPolicy(p)
	return nil
}

// Serve accepts connections on l until Shutdown or Close, serving each on its
// own goroutine. It returns ErrClosed after those, or the accept error.
func (b *Broker) Serve(l net.Listener) error {
	b.smu.Lock()
	if b.closing {
		b.smu.Unlock()
		return ErrClosed
	}
	b.listeners[l] = struct{}{}
	b.smu.Unlock()
	defer func() {
		b.smu.Lock()
		delete(b.listeners, l)
		b.smu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if b.isClosing() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) || errors.Is(err, syscallENFILE) {
				// Out of descriptors, or a transient failure: back off, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				b.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("broker: accept: %w", err)
		}
		delay = 0
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		b.accept(uc)
	}
}

func (b *Broker) isClosing() bool {
	b.smu.Lock()
	defer b.smu.Unlock()
	return b.closing
}

// accept starts a session for uc, or refuses it when the broker or the
// caller's uid is full.
func (b *Broker) accept(uc *net.UnixConn) {
	cred, err := ipc.PeerCred(uc)
	if err != nil {
		b.log.Error("connection dropped: no peer credentials", "err", err)
		uc.Close()
		return
	}
	b.smu.Lock()
	if b.closing {
		b.smu.Unlock()
		uc.Close()
		return
	}
	who := fdConnection
	if b.users.privileged(cred.UID) {
		who = fdPrivileged
	}
	if err := b.fdRoom(len(b.sessions), who); err != nil {
		b.smu.Unlock()
		b.stats.fdRefused.Add(1)
		b.refuseConn(uc, cred, err)
		return
	}
	if limit := b.connectionLimit(cred.UID); len(b.sessions) >= limit {
		b.smu.Unlock()
		b.users.refuse(cred.UID, limitConnections)
		b.refuseConn(uc, cred, fmt.Errorf("%w: connections: the broker holds %d, the most it serves for uid %d (%d of %d are kept for root and the broker's uid)",
			ipc.ErrQuotaExceeded, limit, cred.UID, b.cfg.ReservedConnections, b.cfg.MaxConnections))
		return
	}
	u, err := b.users.connect(cred.UID)
	if err != nil {
		b.smu.Unlock()
		b.refuseConn(uc, cred, err)
		return
	}
	sock, err := ipc.NewInputPolled(uc)
	if err != nil {
		u.disconnect()
		b.smu.Unlock()
		b.log.Error("connection dropped", "pid", cred.PID, "uid", cred.UID, "err", err)
		return
	}
	s := newSession(b, sock, cred, u)
	b.sessions[s] = struct{}{}
	b.sessWG.Add(1)
	b.smu.Unlock()
	go func() {
		defer b.sessWG.Done()
		s.serve()
	}()
}

func (b *Broker) dropSession(s *session) {
	b.smu.Lock()
	delete(b.sessions, s)
	b.smu.Unlock()
}

// Shutdown stops accepting, lets every session finish the request it is
// handling, then closes the sessions, flushes the audit log and closes the
// service files. If ctx ends first, the rest is closed at once and ctx's
// error is returned.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.smu.Lock()
	b.closing = true
	for l := range b.listeners {
		l.Close()
	}
	for s := range b.sessions {
		s.stopReading()
	}
	b.smu.Unlock()
	done := make(chan struct{})
	go func() {
		b.sessWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		b.smu.Lock()
		for s := range b.sessions {
			s.close()
		}
		b.smu.Unlock()
		<-done
	}
	return errors.Join(err, b.Close())
}

// Close closes every listener and connection at once, then the probe, the
// audit log and the service files. It is safe to call more than once.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.smu.Lock()
		b.closing = true
		for l := range b.listeners {
			l.Close()
		}
		for s := range b.sessions {
			s.close()
		}
		b.smu.Unlock()
		b.sessWG.Wait()
		b.closeLoops()
		if b.cfg.Probe != nil {
			err = b.cfg.Probe.Close()
		}
		close(b.floodStop)
		if b.fan != nil {
			close(b.fan) // no session is left to send
		}
		b.wg.Wait()
		err = errors.Join(err, b.audit.Close(), b.closeFiles())
	})
	return err
}

func (b *Broker) closeFiles() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, s := range b.services {
		s.mu.Lock()
		errs = append(errs, s.file.Close())
		s.deleted = true
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}
