package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Scenario names.
const (
	ScenarioRead       = "read"        // ReadVariable / GET
	ScenarioMappedRead = "mapped-read" // a read from the shared mapping (commy only)
	ScenarioWrite      = "write"       // WriteVariable / SET
	ScenarioNotify     = "notify"      // one write, one subscriber: writer to subscriber, one way
	ScenarioFanout     = "fanout"      // one write, N subscribers: until the last has it
	ScenarioOpen       = "open"        // GetServiceFilePath + fd + mmap + first read (commy only)
)

// Scenarios lists every scenario in the order they run.
var Scenarios = []string{ScenarioRead, ScenarioMappedRead, ScenarioWrite, ScenarioNotify, ScenarioFanout, ScenarioOpen}

// ErrNotSupported: the system has no equivalent of the scenario.
var ErrNotSupported = errors.New("bench: scenario not supported by this system")

// System is one server under test. Its methods are safe for concurrent use.
type System interface {
	// Name is "commy" or "redis".
	Name() string
	// Version is the server's version as it reports it.
	Version() string
	// Conn opens a connection for synchronous requests.
	Conn() (Conn, error)
	// Subscriber opens a connection subscribed to the benchmark's variable
	// (commy) or channel (Redis).
	Subscriber() (Subscriber, error)
	// Close removes what the benchmark created and closes the system.
	Close() error
}

// Conn is one client connection. It is not safe for concurrent use.
type Conn interface {
	// Read sends n reads at once and waits for every reply.
	Read(n int) error
	// Write sends n writes of value at once and waits for every reply.
	Write(n int, value []byte) error
	// Publish changes the value and tells every subscriber: a write for
	// commy, PUBLISH for Redis.
	Publish(value []byte) error

	// Reads and Writes are the requests of Read and Write, encoded for a
	// loop that sends them on SyscallConn itself; each call replaces the
	// last one's bytes. Parse then takes the whole replies at the start
	// of b, checking each as Read or Write would, and says how many bytes
	// and replies it took.
	Reads(n int) ([]byte, error)
	Writes(n int, value []byte) ([]byte, error)
	SyscallConn() (syscall.RawConn, error)
	Parse(b []byte) (used, replies int, err error)

	Close() error
}

// Subscriber is a connection that receives change notices, read by a
// receiver: SyscallConn is its socket, and Parse takes the whole notices at
// the start of b, decoding each as a client would, and says how many bytes
// and notices it took. It is not safe for concurrent use.
type Subscriber interface {
	SyscallConn() (syscall.RawConn, error)
	Parse(b []byte) (used, notices int, err error)
	Close() error
}

// Mapper is a System with a shared-memory read path.
type Mapper interface {
	// MappedReader maps the service; read reads the variable from the
	// mapping, close unmaps.
	MappedReader() (read func() error, close func() error, err error)
	// Opener opens a connection; open asks for the service file on it,
	// maps it, reads the variable once and unmaps: what a client pays
	// before its first mapped read.
	Opener() (open func() error, close func() error, err error)
}

// Config is what a run measures.
type Config struct {
	Scenarios   []string
	Clients     []int         // client counts for read, mapped-read, write and open
	Requests    int           // requests per scenario and client count
	Duration    time.Duration // when set, run each scenario this long instead
	ValueSize   int           // bytes of the value written and read
	Pipeline    int           // requests sent before waiting for their replies
	Subscribers int           // subscribers in the fanout scenario
	Rounds      int           // writes measured in the notify and fanout scenarios
	Stalled     int           // extra subscribers that never read, in notify and fanout
	Warmup      int           // unmeasured requests per client before each scenario
	// Alternate, with more than one system, runs each measurement in that
	// many slices, system after system for each slice, and adds the slices
	// up, so that a swing in the machine's speed falls on every system
	// alike. Requests, Duration, Rounds and Warmup are shared out.
	Alternate int
	// Progress, when set, is told how far each measurement is.
	Progress Progress
}

// Progress shows how far a measurement is. Start and Finish come from the
// goroutine running Run; Set from another one.
type Progress interface {
	Start(desc string, total int64)
	Set(done int64)
	Finish()
}

// Result is one measurement of one system.
type Result struct {
	Scenario    string  `json:"scenario"`
	System      string  `json:"system"`
	Clients     int     `json:"clients"`
	Subscribers int     `json:"subscribers,omitempty"`
	Pipeline    int     `json:"pipeline"`
	ValueSize   int     `json:"value_size"`
	Ops         int64   `json:"ops"`
	Seconds     float64 `json:"seconds"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50Micros   float64 `json:"p50_us"`
	P99Micros   float64 `json:"p99_us"`
	P999Micros  float64 `json:"p999_us"`
	MaxMicros   float64 `json:"max_us"`
	// Latencies are the sorted samples, for plots; not printed.
	Latencies []time.Duration `json:"-"`
}

// Key identifies the measurement a result belongs to, across systems.
func (r Result) Key() string {
	return fmt.Sprintf("%s/%d/%d", r.Scenario, r.Clients, r.Subscribers)
}

// Label names the measurement for people: "read, 50 clients".
func (r Result) Label() string {
	switch {
	case r.Subscribers == 1:
		return r.Scenario + ", 1 subscriber"
	case r.Subscribers > 0:
		return fmt.Sprintf("%s, %d subscribers", r.Scenario, r.Subscribers)
	case r.Clients == 1:
		return r.Scenario + ", 1 client"
	default:
		return fmt.Sprintf("%s, %d clients", r.Scenario, r.Clients)
	}
}

func (c Config) withDefaults() Config {
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios
	}
	if len(c.Clients) == 0 {
		c.Clients = []int{1}
	}
	if c.Requests <= 0 {
		c.Requests = 10000
	}
	if c.ValueSize <= 0 {
		c.ValueSize = 64
	}
	if c.Pipeline <= 0 {
		c.Pipeline = 1
	}
	if c.Subscribers <= 0 {
		c.Subscribers = 1000
	}
	if c.Rounds <= 0 {
		c.Rounds = 200
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Alternate <= 0 {
		c.Alternate = 1
	}
	return c
}

// slice is the part of c that the k-th of n slices of a measurement runs:
// each count shared out with the remainder on the first slices, so that
// the slices add up to c.
func (c Config) slice(k, n int) Config {
	share := func(v int) int { return v/n + min(1, max(0, v%n-k)) }
	c.Requests, c.Rounds = share(c.Requests), share(c.Rounds)
	c.Duration /= time.Duration(n)
	if c.Warmup > 0 {
		c.Warmup = max(1, c.Warmup/n)
	}
	return c
}

// Run measures every scenario of cfg on every system, system after system
// for each measurement (or each slice of it, see Config.Alternate), so
// their figures come from the same minute. Scenarios a system has no
// equivalent for are left out of its results.
func Run(ctx context.Context, cfg Config, systems ...System) ([]Result, error) {
	cfg = cfg.withDefaults()
	parts := cfg.Alternate
	if len(systems) < 2 {
		parts = 1
	}
	var out []Result
	for _, sc := range cfg.Scenarios {
		counts := cfg.Clients
		if sc == ScenarioNotify || sc == ScenarioFanout {
			counts = []int{1}
		}
		for _, n := range counts {
			sum := make([]*Result, len(systems))
			skip := make([]bool, len(systems))
			for k := range parts {
				part := ""
				if parts > 1 {
					part = fmt.Sprintf(" (%d/%d)", k+1, parts)
				}
				for i, sys := range systems {
					if skip[i] {
						continue
					}
					if err := ctx.Err(); err != nil {
						return out, err
					}
					r, err := measure(ctx, cfg.slice(k, parts), sys, sc, n, part)
					if errors.Is(err, ErrNotSupported) {
						skip[i] = true
						continue
					}
					if err != nil {
						return out, fmt.Errorf("bench: %s %s: %w", sys.Name(), sc, err)
					}
					if sum[i] == nil {
						sum[i] = &r
					} else {
						sum[i].add(r)
					}
				}
			}
			for _, r := range sum {
				if r != nil {
					r.summarize()
					out = append(out, *r)
				}
			}
		}
	}
	return out, nil
}

// measure runs one measurement, or the slice of one that part names.
func measure(ctx context.Context, cfg Config, sys System, sc string, clients int, part string) (Result, error) {
	value := make([]byte, cfg.ValueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	r := Result{Scenario: sc, System: sys.Name(), Clients: clients, Pipeline: cfg.Pipeline, ValueSize: cfg.ValueSize}
	switch sc {
	case ScenarioNotify:
		r.Subscribers, r.Pipeline = 1, 1
	case ScenarioFanout:
		r.Subscribers, r.Pipeline = cfg.Subscribers, 1
	}
	desc := fmt.Sprintf("%-6s %s%s", sys.Name(), r.Label(), part)
	var lat []time.Duration
	var ops int64
	var elapsed time.Duration
	var err error
	switch sc {
	case ScenarioRead, ScenarioWrite:
		batch := func(c Conn) ([]byte, error) { return c.Reads(cfg.Pipeline) }
		if sc == ScenarioWrite {
			batch = func(c Conn) ([]byte, error) { return c.Writes(cfg.Pipeline, value) }
		}
		lat, ops, elapsed, err = drive(ctx, cfg, desc, clients, sys.Conn, batch)
	case ScenarioMappedRead, ScenarioOpen:
		m, ok := sys.(Mapper)
		if !ok {
			return r, ErrNotSupported
		}
		r.Pipeline = 1
		lat, ops, elapsed, err = load(ctx, cfg, desc, clients, func() (func() error, func() error, error) {
			if sc == ScenarioOpen {
				return m.Opener()
			}
			return m.MappedReader()
		})
	case ScenarioNotify, ScenarioFanout:
		lat, ops, elapsed, err = fanout(ctx, cfg, desc, sys, r.Subscribers, value)
	default:
		return r, fmt.Errorf("bench: unknown scenario %q", sc)
	}
	if err != nil {
		return r, err
	}
	r.Latencies, r.Ops, r.Seconds = lat, ops, elapsed.Seconds()
	r.summarize()
	return r, nil
}

// add adds the samples, operations and time of o, a slice of the same
// measurement, to r.
func (r *Result) add(o Result) {
	r.Latencies = append(r.Latencies, o.Latencies...)
	r.Ops += o.Ops
	r.Seconds += o.Seconds
}

// summarize sorts the samples and works out the rate and percentiles.
func (r *Result) summarize() {
	lat := r.Latencies
	slices.Sort(lat)
	r.OpsPerSec = 0
	if r.Seconds > 0 {
		r.OpsPerSec = float64(r.Ops) / r.Seconds
	}
	r.P50Micros = micros(Percentile(lat, 50))
	r.P99Micros = micros(Percentile(lat, 99))
	r.P999Micros = micros(Percentile(lat, 99.9))
	r.MaxMicros = 0
	if len(lat) > 0 {
		r.MaxMicros = micros(lat[len(lat)-1])
	}
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Percentile is the p-th percentile (nearest rank) of sorted samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// load runs clients goroutines, each with the op open makes, until
// cfg.Requests operations or cfg.Duration passed. Every call is one
// operation and its latency one sample. It is for operations that are not
// a round trip on a socket; drive runs those.
func load(ctx context.Context, cfg Config, desc string, clients int, open func() (op, close func() error, err error)) ([]time.Duration, int64, time.Duration, error) {
	type worker struct {
		op, close func() error
		lat       []time.Duration
		err       error
	}
	ws := make([]*worker, clients)
	defer func() {
		for _, w := range ws {
			if w != nil && w.close != nil {
				w.close()
			}
		}
	}()
	for i := range ws {
		op, cl, err := open()
		if err != nil {
			return nil, 0, 0, err
		}
		ws[i] = &worker{op: op, close: cl}
	}
	total := int64(cfg.Requests)
	var deadline time.Time
	var issued, done atomic.Int64
	var stop atomic.Bool
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			for range cfg.Warmup {
				if w.err = w.op(); w.err != nil {
					stop.Store(true)
					<-start
					return
				}
			}
			<-start
			for !stop.Load() {
				if deadline.IsZero() {
					if issued.Add(1) > total {
						return
					}
				} else if time.Now().After(deadline) {
					return
				}
				t := time.Now()
				if w.err = w.op(); w.err != nil {
					stop.Store(true)
					return
				}
				w.lat = append(w.lat, time.Since(t))
				done.Add(1)
			}
		})
	}
	stopProgress := progress(cfg, desc, total, &done)
	t0 := time.Now()
	if cfg.Duration > 0 {
		deadline = t0.Add(cfg.Duration)
	}
	cancel := context.AfterFunc(ctx, func() { stop.Store(true) })
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	cancel()
	stopProgress()
	var lat []time.Duration
	for _, w := range ws {
		if w.err != nil {
			return nil, 0, 0, w.err
		}
		lat = append(lat, w.lat...)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, 0, err
	}
	return lat, done.Load(), elapsed, nil
}

// progress reports done to cfg.Progress every 100 ms until the returned
// function is called.
func progress(cfg Config, desc string, total int64, done *atomic.Int64) func() {
	if cfg.Progress == nil {
		return func() {}
	}
	p := cfg.Progress
	if cfg.Duration > 0 {
		total = cfg.Duration.Milliseconds()
	}
	p.Start(desc, total)
	t0 := time.Now()
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				if cfg.Duration > 0 {
					p.Set(min(time.Since(t0).Milliseconds(), total))
				} else {
					p.Set(done.Load())
				}
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
		p.Set(total)
		p.Finish()
	}
}

// fanout measures cfg.Rounds writes (or writes for cfg.Duration), each from
// the time it is sent until the last of subs subscribers has its notice.
// The next write waits for that, so no notice ever merges with another.
func fanout(ctx context.Context, cfg Config, desc string, sys System, subs int, value []byte) ([]time.Duration, int64, time.Duration, error) {
	w, err := sys.Conn()
	if err != nil {
		return nil, 0, 0, err
	}
	defer w.Close()
	var readers, stalled []Subscriber
	defer func() {
		for _, s := range append(readers, stalled...) {
			s.Close()
		}
	}()
	for range cfg.Stalled {
		s, err := sys.Subscriber()
		if err != nil {
			return nil, 0, 0, fmt.Errorf("stalled subscriber: %w", err)
		}
		stalled = append(stalled, s)
	}
	for range subs {
		s, err := sys.Subscriber()
		if err != nil {
			return nil, 0, 0, fmt.Errorf("subscriber %d: %w", len(readers)+1, err)
		}
		readers = append(readers, s)
	}
	var remaining atomic.Int64
	last := make(chan time.Time, 1)
	rcv, err := newReceiver(readers, func(n int) {
		if remaining.Add(-int64(n)) == 0 {
			last <- time.Now()
		}
	})
	if err != nil {
		return nil, 0, 0, err
	}
	errs := make(chan error, 1)
	go func() { errs <- rcv.run() }()
	defer func() { // before the subscribers close
		rcv.stop()
		<-errs
	}()
	rounds := int64(cfg.Rounds)
	var done atomic.Int64
	var lat []time.Duration
	round := func() error {
		remaining.Store(int64(subs))
		t := time.Now()
		if err := w.Publish(value); err != nil {
			return err
		}
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		select {
		case at := <-last:
			lat = append(lat, at.Sub(t))
			return nil
		case err := <-errs:
			errs <- err // for the deferred stop
			return err
		case <-timeout.C:
			return fmt.Errorf("%d of %d subscribers had no notice after 10s", remaining.Load(), subs)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for range min(cfg.Warmup, 20) {
		if err := round(); err != nil {
			return nil, 0, 0, err
		}
	}
	lat = lat[:0]
	stopProgress := progress(cfg, desc, rounds, &done)
	defer stopProgress()
	t0 := time.Now()
	for {
		if cfg.Duration > 0 {
			if time.Since(t0) >= cfg.Duration {
				break
			}
		} else if done.Load() >= rounds {
			break
		}
		if err := round(); err != nil {
			return nil, 0, 0, err
		}
		done.Add(1)
	}
	return lat, done.Load(), time.Since(t0), nil
}
