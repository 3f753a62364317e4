//go:build linux

package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Indexes of the counters map; they match enum counter in probe.c.
const (
	counterEvents = 0
	counterLost   = 1
)

// Probe is a loaded and attached audit probe. Its methods are safe for
// concurrent use; concurrent Reads are served one at a time.
type Probe struct {
	selfPID   int
	attached  string
	bootEpoch time.Time // wall clock at boot time 0

	maps probeMaps
	prog *ebpf.Program
	link link.Link
	rd   *ringbuf.Reader

	mu      sync.Mutex
	closed  bool
	final   Stats                                // counters at Close
	watches map[probeFileKey]map[string]struct{} // watched files, with their watched paths ("" for none)
	paths   map[string]probeFileKey              // the file each path in watched_paths names now
}

// Load loads the probe and attaches it at the first attach point that works
// (see the package documentation). When the kernel, the architecture or the
// privileges do not allow it, the error matches ErrNotSupported and keeps the
// causes. A program the verifier rejects is reported without ErrNotSupported:
// that is a bug, or a kernel too old for this probe.
func Load(opts Options) (*Probe, error) {
	if opts.SelfPID == 0 {
		opts.SelfPID = os.Getpid()
	}
	ringSize, err := ringBufSize(opts.RingSize)
	if err != nil {
		return nil, err
	}
	maxWatched := opts.MaxWatched
	if maxWatched == 0 {
		maxWatched = defaultMaxWatched
	}
	if maxWatched < 0 || maxWatched > 1<<20 {
		return nil, fmt.Errorf("ebpf: MaxWatched %d out of range", opts.MaxWatched)
	}
	if err := checkArch(); err != nil {
		return nil, err
	}

	spec, err := loadProbe()
	if err != nil {
		return nil, fmt.Errorf("ebpf: %w", err)
	}
	spec.Maps[probeMapEvents].MaxEntries = ringSize
	spec.Maps[probeMapWatched].MaxEntries = uint32(maxWatched)
	spec.Maps[probeMapWatchedPaths].MaxEntries = uint32(maxWatched)

	epoch, err := bootEpoch()
	if err != nil {
		return nil, err
	}
	p := &Probe{
		selfPID:   opts.SelfPID,
		bootEpoch: epoch,
		watches:   make(map[probeFileKey]map[string]struct{}),
		paths:     make(map[string]probeFileKey),
	}
	if err := spec.LoadAndAssign(&p.maps, nil); err != nil {
		err = fmt.Errorf("ebpf: create maps: %w", err)
		if isNotSupported(err) {
			err = fmt.Errorf("%w: %w", ErrNotSupported, err)
		}
		return nil, err
	}
	if err := p.attach(spec, opts.attach); err != nil {
		p.maps.Close()
		return nil, err
	}
	if p.rd, err = ringbuf.NewReader(p.maps.Events); err != nil {
		p.link.Close()
		p.prog.Close()
		p.maps.Close()
		return nil, fmt.Errorf("ebpf: ring buffer: %w", err)
	}
	return p, nil
}

// ringBufSize rounds n up to a power of two of at least one page.
func ringBufSize(n int) (uint32, error) {
	if n == 0 {
		n = defaultRingSize
	}
	if n < 0 || n > 1<<30 {
		return 0, fmt.Errorf("ebpf: RingSize %d out of range", n)
	}
	size := uint32(os.Getpagesize())
	for int(size) < n {
		size <<= 1
	}
	return size, nil
}

// bootEpoch returns the wall-clock time at which CLOCK_BOOTTIME was zero,
// which is what bpf_ktime_get_boot_ns counts from.
func bootEpoch() (time.Time, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, os.NewSyscallError("clock_gettime", err)
	}
	return time.Now().Round(0).Add(-time.Duration(ts.Nano())), nil
}

// AttachPoint names the attach point in use, e.g. "tp_btf/sys_exit".
func (p *Probe) AttachPoint() string { return p.attached }

// Read blocks until the next event, the deadline set by SetDeadline
// (os.ErrDeadlineExceeded) or Close (ErrClosed).
func (p *Probe) Read() (Event, error) {
	rec, err := p.rd.Read()
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return Event{}, ErrClosed
		}
		return Event{}, fmt.Errorf("ebpf: read: %w", err)
	}
	ev, err := p.decode(rec.RawSample)
	if err != nil {
		return Event{}, err
	}
	ev.Exe, _ = os.Readlink("/proc/" + strconv.FormatUint(uint64(ev.PID), 10) + "/exe")
	return ev, nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded once t has passed and
// no event is left. The zero time removes the deadline.
func (p *Probe) SetDeadline(t time.Time) { p.rd.SetDeadline(t) }

// decode turns one ring buffer record into an Event, without Exe.
func (p *Probe) decode(raw []byte) (Event, error) {
	var e probeEvent
	if _, err := binary.Decode(raw, binary.NativeEndian, &e); err != nil {
		return Event{}, fmt.Errorf("ebpf: decode event of %d bytes: %w", len(raw), err)
	}
	return Event{
		Time:     p.bootEpoch.Add(time.Duration(e.BootNs)),
		Op:       Op(e.Op),
		PID:      e.Pid,
		TID:      e.Tid,
		UID:      e.Uid,
		GID:      e.Gid,
		Comm:     cString(e.Comm[:]),
		Dev:      userDev(e.Dev),
		Ino:      e.Ino,
		Path:     cString(e.Path[:]),
		Flags:    e.Flags,
		MapFlags: e.MapFlags,
		Result:   e.Result,
		Self:     int(e.Pid) == p.selfPID,
	}, nil
}

func cString(s []int8) string {
	b := make([]byte, 0, len(s))
	for _, c := range s {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// Stats returns the probe's counters; after Close, their last values.
func (p *Probe) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return p.final
	}
	return p.statsLocked()
}

func (p *Probe) statsLocked() Stats {
	s := Stats{Watched: len(p.watches)}
	var per []uint64
	if p.maps.Counters.Lookup(uint32(counterEvents), &per) == nil {
		for _, v := range per {
			s.Events += v
		}
	}
	if p.maps.Counters.Lookup(uint32(counterLost), &per) == nil {
		for _, v := range per {
			s.Lost += v
		}
	}
	return s
}

// Close detaches the probe and frees its resources. It unblocks a pending
// Read. Calling it again returns nil.
func (p *Probe) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.final = p.statsLocked()
	p.closed = true
	p.mu.Unlock()

	// Detach first, so nothing is produced while the rest goes.
	if err := errors.Join(p.link.Close(), p.rd.Close(), p.prog.Close(), p.maps.Close()); err != nil {
		return fmt.Errorf("ebpf: close: %w", err)
	}
	return nil
}
