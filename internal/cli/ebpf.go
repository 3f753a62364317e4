package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ebpf"
	"golang.org/x/sys/unix"
)

// startProbe loads the eBPF audit probe. When the kernel or privileges do not
// allow it, it logs exactly why and returns nil: the broker runs without it.
func startProbe(log *slog.Logger) broker.Probe {
	p, err := ebpf.Load(ebpf.Options{})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			log.Warn("eBPF audit probe not supported here; running without it (needs root or CAP_BPF+CAP_PERFMON, and BTF)", "err", err)
		} else {
			log.Error("eBPF audit probe failed to load; running without it", "err", err)
		}
		return nil
	}
	log.Info("eBPF audit probe active", "attach", p.AttachPoint())
	return probeAdapter{p}
}

// probeAdapter lets the broker use an *ebpf.Probe.
type probeAdapter struct{ p *ebpf.Probe }

func (a probeAdapter) Watch(path string, dev, ino uint64) error   { return a.p.Watch(path, dev, ino) }
func (a probeAdapter) Unwatch(path string, dev, ino uint64) error { return a.p.Unwatch(path, dev, ino) }
func (a probeAdapter) Close() error                               { return a.p.Close() }

func (a probeAdapter) Status() broker.ProbeStatus {
	st := a.p.Stats()
	return broker.ProbeStatus{AttachPoint: a.p.AttachPoint(), Events: st.Events, Lost: st.Lost}
}

func (a probeAdapter) Next() (broker.ProbeEvent, error) {
	ev, err := a.p.Read()
	if errors.Is(err, ebpf.ErrClosed) {
		return broker.ProbeEvent{}, fmt.Errorf("%w: %w", broker.ErrClosed, err)
	}
	if err != nil {
		return broker.ProbeEvent{}, err
	}
	return broker.ProbeEvent{
		PID: ev.PID, UID: ev.UID, GID: ev.GID, Comm: ev.Comm, Exe: ev.Exe,
		Access: describeAccess(ev), Path: ev.Path, Dev: ev.Dev, Ino: ev.Ino, Result: ev.Result, Self: ev.Self,
	}, nil
}

// describeAccess renders an event's operation and flags, e.g.
// "open O_RDWR|O_CREAT" or "mmap PROT_READ MAP_SHARED".
func describeAccess(ev ebpf.Event) string {
	switch ev.Op {
	case ebpf.OpOpen:
		mode := map[uint32]string{unix.O_RDONLY: "O_RDONLY", unix.O_WRONLY: "O_WRONLY", unix.O_RDWR: "O_RDWR"}[ev.Flags&unix.O_ACCMODE]
		if mode == "" {
			mode = fmt.Sprintf("O_ACCMODE(%d)", ev.Flags&unix.O_ACCMODE)
		}
		return "open " + flagNames(ev.Flags, mode, []flagName{
			{unix.O_CREAT, "O_CREAT"}, {unix.O_TRUNC, "O_TRUNC"}, {unix.O_APPEND, "O_APPEND"}, {unix.O_PATH, "O_PATH"},
		})
	case ebpf.OpMmap:
		prot := flagNames(ev.Flags, "", []flagName{{unix.PROT_READ, "PROT_READ"}, {unix.PROT_WRITE, "PROT_WRITE"}, {unix.PROT_EXEC, "PROT_EXEC"}})
		if prot == "" {
			prot = "PROT_NONE"
		}
		share := "MAP_PRIVATE"
		if ev.MapFlags&unix.MAP_SHARED != 0 {
			share = "MAP_SHARED"
		}
		return "mmap " + prot + " " + share
	}
	return ev.Op.String()
}

type flagName struct {
	bit  uint32
	name string
}

func flagNames(v uint32, first string, names []flagName) string {
	parts := []string{}
	if first != "" {
		parts = append(parts, first)
	}
	for _, n := range names {
		if v&n.bit == n.bit {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, "|")
}
