package shm

import (
	"errors"
	"os"
	"sync"
)

// Space is address space for the successive mappings of one service, for a
// reader that must replace its mapping (a reconnect found another file) while
// Reads may still be inside the old one, without counting them. A Space never
// unmaps a mapping it replaces: it maps the new file over the same addresses
// (or zero pages, when the reader falls back to the socket), each in one
// mmap(2) with MAP_FIXED, after marking the old Mapping replaced. A Read still
// inside the old Mapping then reads the new file's pages or zeros, or faults
// on pages past the new file's end (Mappings of a Space are always guarded:
// ErrCorrupt), never memory that is not the service's, and returns
// ErrReplaced. Address space is reserved with room for the file to double;
// a file needing more gets a new range, and the old one stays reserved (as
// zero pages, holding no file and no memory) until Close, so a Space holds
// at most one range per doubling of the largest file. A Space is safe for
// concurrent use, except that Close must not race with Reads.
type Space struct {
	mu     sync.Mutex
	ranges [][]byte // reserved; the last is the one in use
	cur    *Mapping // the Mapping in the last range, nil if zeros
	used   int      // bytes of the last range mapped to a file since it was zeroed
	closed bool
}

// Map maps f, a descriptor of a service file, into s, replacing (see Space)
// the Mapping it made before, which it closes. It takes ownership of f.
func (s *Space) Map(f *os.File) (*Mapping, error) {
	h, err := readMapHeader(f)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	need := int(h.maxSize)
	if len(s.ranges) == 0 || len(s.ranges[len(s.ranges)-1]) < need {
		size := need
		if len(s.ranges) > 0 {
			size = max(size, 2*len(s.ranges[len(s.ranges)-1]))
		}
		mem, err := reserveZero(size)
		if err != nil {
			return nil, err
		}
		if err := s.clearLocked(); err != nil {
			unmap(mem)
			return nil, err
		}
		s.ranges = append(s.ranges, mem)
	}
	r := s.ranges[len(s.ranges)-1]
	if s.cur != nil {
		s.retireLocked()
	}
	if err := mapFixed(f, r[:need]); err != nil {
		return nil, err
	}
	if s.used > need {
		if err := mapFixed(nil, r[need:s.used]); err != nil {
			return nil, err
		}
	}
	s.used = need
	s.cur = &Mapping{f: f, mem: r[:need:need], hdr: h, space: s}
	return s.cur, nil
}

// retireLocked marks the current Mapping replaced and ends its Waits, before
// anything is mapped over it, and closes its descriptor.
func (s *Space) retireLocked() {
	s.cur.replaced.Store(true) // seq-cst, before the mmap: see Mapping.Read
	s.cur.Interrupt()
	s.cur.Close()
	s.cur = nil
}

// clearLocked replaces the current Mapping, if any, with zero pages.
func (s *Space) clearLocked() error {
	if s.cur != nil {
		s.retireLocked()
	}
	if s.used > 0 {
		if err := mapFixed(nil, s.ranges[len(s.ranges)-1][:s.used]); err != nil {
			return err
		}
		s.used = 0
	}
	return nil
}

// Clear replaces the current Mapping with zero pages (see Space), releasing
// its file.
func (s *Space) Clear() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clearLocked()
}

// Close closes the current Mapping and unmaps every range. No Read of a
// Mapping of s may run during or after it. It is safe to call more than once.
func (s *Space) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.cur != nil {
		errs = append(errs, s.cur.Close())
		s.cur = nil
	}
	for _, r := range s.ranges {
		errs = append(errs, unmap(r))
	}
	s.ranges, s.used, s.closed = nil, 0, true
	return errors.Join(errs...)
}
