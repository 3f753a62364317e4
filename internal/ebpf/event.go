package ebpf

import (
	"strconv"
	"time"
)

// Options configure Load. The zero value is usable.
type Options struct {
	// SelfPID is the broker's process id; its accesses are reported with
	// Event.Self set, not dropped. 0 means os.Getpid().
	SelfPID int
	// RingSize is the size of the kernel-to-user ring buffer in bytes,
	// rounded up to a power of two of at least one page. 0 means 256 KiB.
	RingSize int
	// MaxWatched bounds the number of watched files and of watched paths.
	// 0 means 4096.
	MaxWatched int

	// attach, when set by tests, is the only attach point tried.
	attach string
}

const (
	defaultRingSize   = 256 << 10
	defaultMaxWatched = 4096
)

// Op is the kind of access an Event reports.
type Op uint8

// Values match enum op in probe.c.
const (
	OpOpen Op = 1 // open, openat, openat2, creat or open_by_handle_at
	OpMmap Op = 2 // mmap of a descriptor
)

func (o Op) String() string {
	switch o {
	case OpOpen:
		return "open"
	case OpMmap:
		return "mmap"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Event is one audited access to a watched file.
type Event struct {
	Time     time.Time // wall clock, derived from the kernel's boot-time clock
	Op       Op
	PID      uint32 // thread group id, in the initial PID namespace
	TID      uint32
	UID      uint32 // real uid and gid, in the initial user namespace
	GID      uint32
	Comm     string // the thread's command name
	Exe      string // /proc/<PID>/exe when Read ran; "" if the process was gone
	Dev      uint64 // device, in stat(2) st_dev encoding
	Ino      uint64
	Path     string // OpOpen: the path argument as passed (may be relative); "" if none or unreadable
	Flags    uint32 // OpOpen: open flags; OpMmap: prot
	MapFlags uint32 // OpMmap: mmap flags
	Result   int64  // OpOpen: the new fd or -errno; OpMmap: the address or -errno
	Self     bool   // PID == Options.SelfPID
}

// Stats are counters of a Probe.
type Stats struct {
	Events  uint64 // events the kernel put in the ring buffer
	Lost    uint64 // events dropped because the ring buffer was full
	Watched int    // watched files (device, inode)
}
