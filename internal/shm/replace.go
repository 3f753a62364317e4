package shm

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
)

// Replace copies the service into a new file and returns it: a new sealed
// memfd for a memfd, or, for a file, a new file renamed over the old path
// (O_EXCL and O_NOFOLLOW, synced before the rename). f is left as it was, so
// the caller can swap the new File in under its service lock and then call
// MarkReplaced and Close on f. It needs exclusive access, like every change:
// the copy then holds every published value. The new File keeps f's GrowFunc
// and OnDamage.
func (f *File) Replace() (*File, error) {
	if err := f.usable(); err != nil {
		return nil, err
	}
	nf, err := f.replace()
	if err != nil {
		return nil, fmt.Errorf("shm: replace %s: %w", f.path, err)
	}
	nf.charge, nf.onDamage = f.charge, f.onDamage
	return nf, nil
}

func (f *File) replace() (_ *File, err error) {
	defer f.guard(debug.SetPanicOnFault(true), &err)
	if f.memfd {
		tenant, service := f.Names()
		dst, err := memfdCreate("commy:" + tenant + "/" + service)
		if err != nil {
			return nil, err
		}
		sf, err := f.copyTo(dst, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), dst.Fd()))
		if err == nil {
			sf.memfd = true
			if err = sealMemfd(dst); err != nil {
				sf.Close()
				return nil, err
			}
			return sf, nil
		}
		dst.Close()
		return nil, err
	}
	tmp := filepath.Join(filepath.Dir(f.path), "."+filepath.Base(f.path)+".replace")
	os.Remove(tmp) // left by a broker that died here; removes a link, never its target
	dst, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	sf, err := f.copyTo(dst, f.path)
	if err == nil {
		if err = dst.Sync(); err == nil {
			err = os.Rename(tmp, f.path)
		}
		if err != nil {
			sf.Close()
		}
	} else {
		dst.Close()
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if d, derr := os.Open(filepath.Dir(f.path)); derr == nil {
		d.Sync() // the rename survives a crash
		d.Close()
	}
	return sf, nil
}

// copyTo writes f's pages into dst and opens dst as a File at path.
func (f *File) copyTo(dst *os.File, path string) (*File, error) {
	if err := reserve(dst, 0, f.size); err != nil {
		return nil, err
	}
	if _, err := dst.WriteAt(f.mem[:f.size], 0); err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	sf, err := open(dst, path)
	if err != nil {
		return nil, err
	}
	return sf, nil
}

// MarkReplaced marks the file replaced by another (see Replace), so that
// every mapped reader gets ErrServiceReplaced and asks the broker for the new
// file, and wakes every Wait.
func (f *File) MarkReplaced() {
	if f.mem == nil {
		return
	}
	var err error
	defer f.guard(debug.SetPanicOnFault(true), &err)
	u32(f.mem, offFlags).Or(flagReplaced) // release, before the wake
	f.wake()
}

// goneErr says why a mapping whose flags stop readers stops them.
func (m *Mapping) goneErr() error {
	if u32(m.mem, offFlags).Load()&flagDeleted != 0 { // acquire
		return ErrServiceDeleted
	}
	return ErrServiceReplaced
}

// FileReplaced reports whether the broker replaced the file (see
// File.Replace): reads then fail with ErrServiceReplaced.
func (m *Mapping) FileReplaced() bool {
	return m.mem != nil && u32(m.mem, offFlags).Load()&flagReplaced != 0 // acquire
}
