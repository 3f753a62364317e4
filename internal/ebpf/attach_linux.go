//go:build linux

package ebpf

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachPoint is one way to run the sys_exit program.
type attachPoint struct {
	name   string       // as reported by AttachPoint
	prog   string       // program name in probe.c
	ready  func() error // optional precondition
	attach func(*ebpf.Program) (link.Link, error)
}

// attachPoints in order of preference.
var attachPoints = []attachPoint{
	{
		name: "tp_btf/sys_exit",
		prog: probeProgOnExitBtf,
		attach: func(p *ebpf.Program) (link.Link, error) {
			return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
		},
	},
	{
		name: "raw_tracepoint/sys_exit",
		prog: probeProgOnExitRaw,
		attach: func(p *ebpf.Program) (link.Link, error) {
			return link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: p})
		},
	},
	{
		name:  "tracepoint/raw_syscalls/sys_exit",
		prog:  probeProgOnExitTp,
		ready: tracefsMounted,
		attach: func(p *ebpf.Program) (link.Link, error) {
			return link.Tracepoint("raw_syscalls", "sys_exit", p, nil)
		},
	},
}

// tracefsMounted reports whether link.Tracepoint can find tracefs, with an
// error matching os.ErrNotExist when it cannot.
func tracefsMounted() error {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(mi), "\n") {
		// Fields after the " - " separator: fstype, source, options.
		if _, after, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(after, "tracefs ") {
			return nil
		}
	}
	// debugfs mounts tracefs on demand below tracing/.
	if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err == nil {
		return nil
	}
	return fmt.Errorf("tracefs is not mounted: %w", os.ErrNotExist)
}

// enotsupp corresponds to ENOTSUPP in include/linux/errno.h (kernel internal).
const enotsupp = syscall.Errno(524)

// attach tries the attach points in order (only the one named only, if set).
func (p *Probe) attach(spec *ebpf.CollectionSpec, only string) error {
	replace := map[string]*ebpf.Map{
		probeMapCounters:     p.maps.Counters,
		probeMapEvents:       p.maps.Events,
		probeMapWatched:      p.maps.Watched,
		probeMapWatchedPaths: p.maps.WatchedPaths,
	}
	var errs []error
	all := true // every failure is one the kernel or the privileges impose
	for _, ap := range attachPoints {
		if only != "" && only != ap.name {
			continue
		}
		prog, l, err := ap.load(spec, replace)
		if err == nil {
			p.prog, p.link, p.attached = prog, l, ap.name
			return nil
		}
		all = all && isNotSupported(err)
		errs = append(errs, fmt.Errorf("%s: %w", ap.name, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("ebpf: unknown attach point %q", only)
	}
	err := fmt.Errorf("ebpf: attach: %w", attachError(errs))
	if all {
		err = fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return err
}

// attachError lists, on one line, why each attach point failed.
type attachError []error

func (e attachError) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e attachError) Unwrap() []error { return e }

// load loads the attach point's program, using the maps already created,
// and attaches it.
func (ap attachPoint) load(spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map) (*ebpf.Program, link.Link, error) {
	if ap.ready != nil {
		if err := ap.ready(); err != nil {
			return nil, nil, err
		}
	}
	prog, err := loadProgram(spec, ap.prog, maps)
	if err != nil {
		return nil, nil, err
	}
	l, err := ap.attach(prog)
	if err != nil {
		prog.Close()
		return nil, nil, err
	}
	return prog, l, nil
}

// loadProgram loads one program of spec, using already created maps.
func loadProgram(spec *ebpf.CollectionSpec, name string, maps map[string]*ebpf.Map) (*ebpf.Program, error) {
	one := spec.Copy()
	for n := range one.Programs {
		if n != name {
			delete(one.Programs, n)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: maps})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(name), nil
}

// isNotSupported reports whether err is one the kernel or the privileges
// impose, rather than a bug in the probe.
func isNotSupported(err error) bool {
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, btf.ErrNotSupported) {
		return true
	}
	if verr := (*ebpf.VerifierError)(nil); errors.As(err, &verr) && len(verr.Log) > 0 {
		// The verifier ran and refused the program.
		return errors.Is(err, unix.EPERM)
	}
	for _, errno := range []error{unix.EPERM, unix.EACCES, unix.ENOSYS, unix.EOPNOTSUPP, enotsupp, unix.EINVAL, unix.ENOENT} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, btf.ErrNotFound)
}

// checkArch refuses kernels whose system call frames probe.c does not decode.
func checkArch() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("%w: %w", ErrNotSupported, os.NewSyscallError("uname", err))
	}
	if m := unix.ByteSliceToString(u.Machine[:]); m != "x86_64" {
		return fmt.Errorf("%w: system call decoding is written for x86_64, this kernel is %s", ErrNotSupported, m)
	}
	return nil
}
