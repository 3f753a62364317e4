//go:build linux

package ebpf

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BenchmarkOpenCloseUnrelated measures open(2)+close(2) of a file the probe
// does not watch, without and with the probe attached, in the same run.
func BenchmarkOpenCloseUnrelated(b *testing.B) {
	dir := b.TempDir()
	unrelated := filepath.Join(dir, "unrelated")
	watched := filepath.Join(dir, "svc.mem")
	for _, f := range []string{unrelated, watched} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	benchProbe(b, watched, func(b *testing.B) {
		fd, err := unix.Open(unrelated, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Close(fd); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkGetppid measures a system call the probe never looks at; any
// sys_exit program puts every system call on the kernel's slower exit path.
func BenchmarkGetppid(b *testing.B) {
	watched := filepath.Join(b.TempDir(), "svc.mem")
	if err := os.WriteFile(watched, []byte("x"), 0o600); err != nil {
		b.Fatal(err)
	}
	benchProbe(b, watched, func(*testing.B) { unix.Getppid() })
}

// benchProbe runs op with
//   - probe=off: nothing attached;
//   - probe=noop: a program that returns at once attached at sys_exit, the
//     floor any sys_exit probe costs;
//   - probe=on: the probe, watching another file;
//   - toggle=noop and toggle=on: the same two attached and detached for
//     alternate blocks of iterations; they report the median slowdown of a
//     block, which drifting load on a shared machine disturbs less.
func benchProbe(b *testing.B, watched string, op func(*testing.B)) {
	loop := func(b *testing.B) {
		for b.Loop() {
			op(b)
		}
	}
	b.Run("probe=off", loop)
	b.Run("probe=noop", func(b *testing.B) {
		l, err := attachNoop(b)()
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		loop(b)
	})
	b.Run("probe=on", func(b *testing.B) {
		p := loadOrSkip(b, Options{})
		watch(b, p, watched)
		loop(b)
		if s := p.Stats(); s.Events != 0 {
			b.Errorf("Stats() = %+v, want no events", s)
		}
	})
	b.Run("toggle=noop", func(b *testing.B) {
		toggle(b, op, attachNoop(b))
	})
	b.Run("toggle=on", func(b *testing.B) {
		p := loadOrSkip(b, Options{})
		watch(b, p, watched)
		var ap attachPoint
		for _, ap = range attachPoints {
			if ap.name == p.AttachPoint() {
				break
			}
		}
		// The probe's own link stays attached until Close; toggle a second one.
		if err := p.link.Close(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			var err error
			if p.link, err = ap.attach(p.prog); err != nil {
				b.Fatal(err)
			}
		}()
		toggle(b, op, func() (link.Link, error) { return ap.attach(p.prog) })
		if s := p.Stats(); s.Events != 0 {
			b.Errorf("Stats() = %+v, want no events", s)
		}
	})
}

// toggle runs op in blocks, alternately with and without attach's link, and
// reports the median of with/without per pair of blocks as %overhead. A few
// untimed operations after each attach and detach let the change settle.
func toggle(b *testing.B, op func(*testing.B), attach func() (link.Link, error)) {
	const block, settle = 1000, 100
	run := func(n int) time.Duration {
		start := time.Now()
		for range n {
			op(b)
		}
		return time.Since(start)
	}
	var l link.Link
	set := func(on bool) {
		var err error
		if on {
			l, err = attach()
		} else {
			err = l.Close()
		}
		if err != nil {
			b.Fatal(err)
		}
		run(settle)
	}
	var ratios []float64
	for i := 0; i < b.N; i += 2 * block {
		var on, off time.Duration
		if len(ratios)%2 == 0 {
			set(true)
			on = run(block)
			set(false)
			off = run(block)
		} else {
			off = run(block)
			set(true)
			on = run(block)
			set(false)
		}
		ratios = append(ratios, float64(on)/float64(off))
	}
	slices.Sort(ratios)
	b.ReportMetric((ratios[len(ratios)/2]-1)*100, "%overhead")
}

// attachNoop returns a function attaching "return 0" at tp_btf/sys_exit.
func attachNoop(b *testing.B) func() (link.Link, error) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root (CAP_BPF and CAP_PERFMON)")
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     "sys_exit",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "MIT",
	})
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EPERM) {
		b.Skipf("tp_btf not supported here: %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { prog.Close() })
	return func() (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	}
}
