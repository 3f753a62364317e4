//go:build linux

package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Watch starts auditing the file with device dev (as stat(2) st_dev) and
// inode ino. path is its clean absolute path, used to match refused opens,
// or "" when it has none (a memfd). Watching the same file and path twice is
// a no-op. A path watched for a second file names that file from then on;
// the first file stays watched until it is unwatched.
func (p *Probe) Watch(path string, dev, ino uint64) error {
	if err := checkPath(path); err != nil {
		return err
	}
	kdev, err := kernelDev(dev)
	if err != nil {
		return err
	}
	key := probeFileKey{Dev: kdev, Ino: ino}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	paths, ok := p.watches[key]
	if _, dup := paths[path]; dup && (path == "" || p.paths[path] == key) {
		return nil
	}
	if !ok {
		if err := p.maps.Watched.Update(&key, uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("ebpf: watch %d:%d: %w", dev, ino, err)
		}
		paths = make(map[string]struct{})
		p.watches[key] = paths
	}
	if path != "" {
		pk := pathKey(path)
		if err := p.maps.WatchedPaths.Update(&pk, &key, ebpf.UpdateAny); err != nil {
			if len(paths) == 0 {
				p.unwatchFileLocked(key)
			}
			return fmt.Errorf("ebpf: watch %q: %w", path, err)
		}
		p.paths[path] = key
	}
	paths[path] = struct{}{}
	return nil
}

// Unwatch stops auditing path for the file; the file itself stays watched
// while another path (or "") is watched for it. It returns ErrNotWatched if
// that file and path were not watched.
func (p *Probe) Unwatch(path string, dev, ino uint64) error {
	kdev, err := kernelDev(dev)
	if err != nil {
		return err
	}
	key := probeFileKey{Dev: kdev, Ino: ino}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	paths := p.watches[key]
	if _, ok := paths[path]; !ok {
		return fmt.Errorf("%w: %q (%d:%d)", ErrNotWatched, path, dev, ino)
	}
	var errs []error
	if path != "" && p.paths[path] == key {
		pk := pathKey(path)
		if err := p.maps.WatchedPaths.Delete(&pk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("ebpf: unwatch %q: %w", path, err))
		}
		delete(p.paths, path)
	}
	delete(paths, path)
	if len(paths) == 0 {
		if err := p.unwatchFileLocked(key); err != nil {
			errs = append(errs, fmt.Errorf("ebpf: unwatch %d:%d: %w", dev, ino, err))
		}
	}
	return errors.Join(errs...)
}

func (p *Probe) unwatchFileLocked(key probeFileKey) error {
	delete(p.watches, key)
	if err := p.maps.Watched.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

func pathKey(path string) probePathKey {
	var k probePathKey
	for i := 0; i < len(path); i++ {
		k.Path[i] = int8(path[i])
	}
	return k
}
