package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/simd"
)

// WorkingCopy is a local copy of every variable of a service that the
// application edits in place, and sends back with Sync. Beside the working
// bytes it keeps a shadow: the values as the broker last had them. Sync
// finds the bytes that differ from the shadow, and reports the variables
// they touch in one ReportVariableChanges.
//
// Every variable has the size it had when the copy was made or last
// refreshed: edits change bytes, not sizes (use Service.Write to resize, then
// Refresh). Refresh takes other clients' changes into variables the
// application has not edited, re-laying out the copy when a variable was
// added, removed or resized elsewhere; slices from Bytes are then stale, so
// get them again after each Refresh.
//
// Sync and Refresh may be called from any goroutine; one waits for the
// other. Bytes, Names and Dirty do not lock: while Watch runs (or another
// goroutine calls Sync or Refresh) hold Lock while calling them and editing,
// and do not keep the slices after Unlock. Close must not race with other
// calls.
type WorkingCopy struct {
	svc *Service
	m   *Mapping

	mu     sync.Mutex // Lock: guards work, shadow, vars, index
	work   []byte
	shadow []byte
	vars   []wcVar // by name, which is also by offset
	index  map[string]int

	op      chan struct{} // one Sync or Refresh at a time; holds the scratch below
	ranges  []simd.Range
	touched []int
	snap    []byte
	values  []ipc.NamedValue
	in      []byte

	wmu     sync.Mutex // guards the watcher and closed
	closed  bool
	stop    context.CancelFunc
	wdone   chan struct{}
	lastErr error
}

// wcVar is where a variable lies in the working and shadow buffers.
type wcVar struct {
	name      string
	off, size int
}

// WorkingCopy reads every variable of the service (through a Mapping, so
// locally where the map right allows) into a new working copy.
func (s *Service) WorkingCopy(ctx context.Context) (*WorkingCopy, error) {
	m, err := s.Map(ctx)
	if err != nil {
		return nil, err
	}
	w := &WorkingCopy{svc: s, m: m, index: map[string]int{}, op: make(chan struct{}, 1)}
	if _, err := w.Refresh(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return w, nil
}

// Local reports whether Refresh reads from shared memory.
func (w *WorkingCopy) Local() bool { return w.m.Local() }

// Lock locks the copy against Sync, Refresh and the Watch goroutine.
func (w *WorkingCopy) Lock() { w.mu.Lock() }

// Unlock unlocks what Lock locked.
func (w *WorkingCopy) Unlock() { w.mu.Unlock() }

// Bytes is the working value of the named variable, to read and edit in
// place, or nil if the copy has no such variable. Its length and capacity are
// the variable's size.
func (w *WorkingCopy) Bytes(name string) []byte {
	i, ok := w.index[name]
	if !ok {
		return nil
	}
	v := w.vars[i]
	return w.work[v.off : v.off+v.size : v.off+v.size]
}

// Names lists the variables of the copy, sorted.
func (w *WorkingCopy) Names() []string {
	out := make([]string, len(w.vars))
	for i, v := range w.vars {
		out[i] = v.name
	}
	return out
}

// Dirty lists the variables whose working bytes differ from the shadow: what
// the next Sync will report.
func (w *WorkingCopy) Dirty() []string {
	ranges := simd.Diff(w.work, w.shadow, nil)
	var out []string
	for _, i := range w.touch(ranges, nil) {
		out = append(out, w.vars[i].name)
	}
	return out
}

// touch appends the index of every variable the ranges touch, each once, in
// order. The ranges are sorted, so a binary search over the variables' ends
// finds the first variable of each.
func (w *WorkingCopy) touch(ranges []simd.Range, dst []int) []int {
	vars := w.vars
	for _, r := range ranges {
		lo, hi := 0, len(vars)
		for lo < hi { // first variable ending after r.Start
			mid := int(uint(lo+hi) >> 1)
			if vars[mid].off+vars[mid].size <= r.Start {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		for i := lo; i < len(vars) && vars[i].off < r.End; i++ {
			if vars[i].size > 0 && (len(dst) == 0 || dst[len(dst)-1] != i) {
				dst = append(dst, i)
			}
		}
	}
	return dst
}

func (w *WorkingCopy) acquire(ctx context.Context) error {
	select {
	case w.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *WorkingCopy) release() { <-w.op }

// Sync sends the variables whose working bytes differ from the shadow in one
// ReportVariableChanges, waits for the broker to acknowledge it, then makes
// the sent values the shadow. It returns the names it sent (none when
// nothing changed). The copy is locked only while the changes are found and
// copied out, not during the round trip; edits made meanwhile go with the
// next Sync. On error nothing is marked sent.
func (w *WorkingCopy) Sync(ctx context.Context) ([]string, error) {
	if err := w.acquire(ctx); err != nil {
		return nil, err
	}
	defer w.release()
	w.mu.Lock()
	w.ranges = simd.Diff(w.work, w.shadow, w.ranges[:0])
	w.touched = w.touch(w.ranges, w.touched[:0])
	if len(w.touched) == 0 {
		w.mu.Unlock()
		return nil, nil
	}
	n := 0
	for _, i := range w.touched {
		n += w.vars[i].size
	}
	if cap(w.snap) < n {
		w.snap = make([]byte, n)
	}
	snap := w.snap[:n]
	names := make([]string, len(w.touched))
	values := w.values[:0]
	pos := 0
	for k, i := range w.touched {
		v := w.vars[i]
		copy(snap[pos:], w.work[v.off:v.off+v.size])
		names[k] = v.name
		values = append(values, ipc.NamedValue{Name: v.name, Value: snap[pos : pos+v.size : pos+v.size]})
		pos += v.size
	}
	w.values = values
	w.mu.Unlock()

	_, err := call[*ipc.VariableChangesAcknowledged](ctx, w.svc.c,
		&ipc.ReportVariableChanges{ServiceID: w.svc.ID, ChangedVariables: names, NewValues: values})
	if err != nil {
		return nil, err
	}
	// Refresh, the only thing that moves variables, cannot have run: we hold op.
	w.mu.Lock()
	for k, i := range w.touched {
		v := w.vars[i]
		copy(w.shadow[v.off:v.off+v.size], values[k].Value)
	}
	w.mu.Unlock()
	return names, nil
}

// Refresh reads every variable from the broker (locally when mapped) and
// takes the new values into the variables the application has not edited;
// edited ("dirty") variables keep their working bytes and size until Sync.
// Variables added elsewhere appear, and variables deleted elsewhere go, even
// if dirty. It returns the names whose working bytes changed, appeared or
// went.
func (w *WorkingCopy) Refresh(ctx context.Context) ([]string, error) {
	if err := w.acquire(ctx); err != nil {
		return nil, err
	}
	defer w.release()
	infos, err := w.m.Variables(ctx)
	if err != nil {
		return nil, err
	}
	type fresh struct {
		name      string
		off, size int
	}
	got := make([]fresh, 0, len(infos))
	in := w.in[:0]
	var buf []byte
	for _, vi := range infos {
		buf, _, err = w.m.read(ctx, vi.Name, buf[:0])
		if errors.Is(err, ErrVariableNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("client: refresh %s: %w", vi.Name, err)
		}
		got = append(got, fresh{name: vi.Name, off: len(in), size: len(buf)})
		in = append(in, buf...)
	}
	w.in = in

	w.mu.Lock()
	defer w.mu.Unlock()
	w.ranges = simd.Diff(w.work, w.shadow, w.ranges[:0])
	dirty := map[int]bool{}
	for _, i := range w.touch(w.ranges, w.touched[:0]) {
		dirty[i] = true
	}
	// The new layout: dirty variables keep their size.
	vars := make([]wcVar, len(got))
	same := len(got) == len(w.vars)
	total := 0
	for k, g := range got {
		size := g.size
		if i, ok := w.index[g.name]; ok && dirty[i] {
			size = w.vars[i].size
		}
		vars[k] = wcVar{name: g.name, off: total, size: size}
		total += size
		same = same && w.vars[k].name == g.name && w.vars[k].size == size
	}
	var changed []string
	if same {
		for k, g := range got {
			v := vars[k]
			val := in[g.off : g.off+g.size]
			if dirty[k] || string(w.work[v.off:v.off+v.size]) == string(val) {
				continue
			}
			copy(w.work[v.off:], val)
			copy(w.shadow[v.off:], val)
			changed = append(changed, v.name)
		}
		return changed, nil
	}
	work, shadow := make([]byte, total), make([]byte, total)
	index := make(map[string]int, len(vars))
	for k, g := range got {
		v := vars[k]
		index[v.name] = k
		if i, ok := w.index[v.name]; ok && dirty[i] {
			o := w.vars[i]
			copy(work[v.off:], w.work[o.off:o.off+o.size])
			copy(shadow[v.off:], w.shadow[o.off:o.off+o.size])
			continue
		}
		val := in[g.off : g.off+g.size]
		copy(work[v.off:], val)
		copy(shadow[v.off:], val)
		if i, ok := w.index[v.name]; !ok || string(w.work[w.vars[i].off:w.vars[i].off+w.vars[i].size]) != string(val) {
			changed = append(changed, v.name)
		}
	}
	for _, o := range w.vars {
		if _, ok := index[o.name]; !ok {
			changed = append(changed, o.name)
		}
	}
	w.work, w.shadow, w.vars, w.index = work, shadow, vars, index
	return changed, nil
}

// Watch starts a goroutine that calls Sync every interval and Refresh
// whenever another client changes the service, until ctx is done, Close, or
// the client ends. Errors do not stop it; Err reports the last one. Hold Lock
// while editing as long as it runs.
func (w *WorkingCopy) Watch(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("client: watch interval %v: must be positive", interval)
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.wdone != nil {
		select {
		case <-w.wdone:
		default:
			return errors.New("client: working copy already watched")
		}
	}
	sub, err := w.svc.Subscribe(ctx)
	if err != nil {
		return err
	}
	c := w.svc.c
	c.mu.Lock()
	if c.final {
		err := c.err
		c.mu.Unlock()
		sub.Close()
		return err
	}
	c.wg.Add(1) // Client.Close waits for it too
	c.mu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(c.ctx, cancel)
	done := make(chan struct{})
	w.stop, w.wdone, w.lastErr = cancel, done, nil
	go func() {
		defer c.wg.Done()
		defer close(done)
		defer unhook()
		defer cancel()
		defer sub.Close()
		w.watch(wctx, interval, sub)
	}()
	return nil
}

func (w *WorkingCopy) watch(ctx context.Context, interval time.Duration, sub *Subscription) {
	t := time.NewTicker(interval)
	defer t.Stop()
	notices := sub.signal
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-w.svc.c.done:
			return
		case <-t.C:
			_, err = w.Sync(ctx)
		case _, ok := <-notices:
			_, _, serr := sub.take()
			if !ok && serr != nil {
				notices = nil // ended: keep syncing
				err = serr
				break
			}
			_, err = w.Refresh(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		w.wmu.Lock()
		w.lastErr = err
		w.wmu.Unlock()
	}
}

// Err is the last error of the Watch goroutine, or nil if its last Sync or
// Refresh worked.
func (w *WorkingCopy) Err() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.lastErr
}

// Close stops Watch, waits for it, and closes the mapping. It is safe to call
// more than once.
func (w *WorkingCopy) Close() error {
	w.wmu.Lock()
	if w.closed {
		w.wmu.Unlock()
		return nil
	}
	w.closed = true
	stop, done := w.stop, w.wdone
	w.wmu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return w.m.Close()
}
