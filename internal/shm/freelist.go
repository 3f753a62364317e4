package shm

import "sort"

// extent is a free byte range [off, off+n) in the data area.
type extent struct{ off, n uint64 }

// freeList keeps the free extents below the data end, sorted and coalesced.
// It lives in the broker's memory only; Open rebuilds it from the directory.
type freeList struct{ ext []extent }

// take removes n bytes from the first extent that holds them.
func (l *freeList) take(n uint64) (uint64, bool) {
	for i, e := range l.ext {
		if e.n >= n {
			if e.n == n {
				l.ext = append(l.ext[:i], l.ext[i+1:]...)
			} else {
				l.ext[i] = extent{e.off + n, e.n - n}
			}
			return e.off, true
		}
	}
	return 0, false
}

// put returns [off, off+n) and merges it with its neighbours.
func (l *freeList) put(off, n uint64) {
	i := sort.Search(len(l.ext), func(i int) bool { return l.ext[i].off > off })
	l.ext = append(l.ext, extent{})
	copy(l.ext[i+1:], l.ext[i:])
	l.ext[i] = extent{off, n}
	if i+1 < len(l.ext) && l.ext[i].off+l.ext[i].n == l.ext[i+1].off {
		l.ext[i].n += l.ext[i+1].n
		l.ext = append(l.ext[:i+1], l.ext[i+2:]...)
	}
	if i > 0 && l.ext[i-1].off+l.ext[i-1].n == l.ext[i].off {
		l.ext[i-1].n += l.ext[i].n
		l.ext = append(l.ext[:i], l.ext[i+1:]...)
	}
}

func (l *freeList) total() uint64 {
	var t uint64
	for _, e := range l.ext {
		t += e.n
	}
	return t
}
