package broker

import (
	"errors"
	"os"
)

// Probe is an optional source of file-access events for the service files,
// such as the eBPF probe of package ebpf. The broker tells it which files to
// watch and writes what it reports to the audit log.
type Probe interface {
	Watch(path string, dev, ino uint64) error
	Unwatch(path string, dev, ino uint64) error
	// Next blocks for the next event. Once the probe is closed it fails with
	// an error matching ErrClosed; other errors are logged and reading goes on.
	Next() (ProbeEvent, error)
	Status() ProbeStatus
	Close() error
}

// ProbeEvent is one access to a watched file.
type ProbeEvent struct {
	PID, UID, GID uint32
	Comm, Exe     string
	Access        string // "open" or "mmap", with flags
	Path          string
	Dev, Ino      uint64
	Result        int64
	Self          bool // by the broker itself
}

// ProbeStatus is what Stats reports of the probe.
type ProbeStatus struct {
	AttachPoint  string
	Events, Lost uint64
}

type fileKey struct{ dev, ino uint64 }

func statKey(fi os.FileInfo) (fileKey, bool) {
	dev, ino, ok := devIno(fi)
	return fileKey{dev, ino}, ok
}

// watchFile asks the probe to watch a service's file.
func (b *Broker) watchFile(s *service) {
	if b.cfg.Probe == nil {
		return
	}
	fi, err := s.file.Stat()
	if err != nil {
		return
	}
	k, ok := statKey(fi)
	if !ok {
		return
	}
	b.probeMu.Lock()
	b.probeFiles[k] = s.id
	b.probeMu.Unlock()
	if err := b.cfg.Probe.Watch(s.file.Path(), k.dev, k.ino); err != nil {
		b.log.Error("probe: cannot watch service file", "service", s.id, "err", err)
	}
}

// unwatchFile stops watching a service's file.
func (b *Broker) unwatchFile(s *service, path string, fi os.FileInfo) {
	if b.cfg.Probe == nil || fi == nil {
		return
	}
	k, ok := statKey(fi)
	if !ok {
		return
	}
	b.probeMu.Lock()
	delete(b.probeFiles, k)
	b.probeMu.Unlock()
	if err := b.cfg.Probe.Unwatch(path, k.dev, k.ino); err != nil {
		b.log.Error("probe: cannot unwatch service file", "service", s.id, "err", err)
	}
}

// readProbe writes the probe's events to the audit log until it is closed.
func (b *Broker) readProbe() {
	defer b.wg.Done()
	for {
		ev, err := b.cfg.Probe.Next()
		if errors.Is(err, ErrClosed) {
			return
		}
		if err != nil {
			b.log.Error("probe: bad event", "err", err)
			continue
		}
		b.stats.probeEvents.Add(1)
		b.probeMu.Lock()
		id := b.probeFiles[fileKey{ev.Dev, ev.Ino}]
		b.probeMu.Unlock()
		uid, gid, res := ev.UID, ev.GID, ev.Result
		b.logAudit(Record{
			Event: EventFileAccess, PID: int32(ev.PID), UID: &uid, GID: &gid, Comm: ev.Comm, Exe: ev.Exe,
			ServiceID: id, Access: ev.Access, Path: ev.Path, Result: &res, Broker: ev.Self,
		})
	}
}
