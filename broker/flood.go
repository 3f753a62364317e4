package broker

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/commy/commy/internal/ipc"
)

// Denial coalescing defaults: per uid and interval, the first
// DefaultAuditBurst denials (and protocol errors that close a connection)
// are recorded in full, the rest counted in one summary record and one log
// line at the end of the interval.
const (
	DefaultAuditCoalesce = 10 * time.Second
	DefaultAuditBurst    = 10
)

// flood coalesces one uid's repeated audited events: denials, or
// connections. It is safe for concurrent use.
type flood struct {
	interval time.Duration // 0: every event in full
	burst    int
	what     string // the events, for the summary: "denials", "connections"

	mu   sync.Mutex
	uids map[uint32]*floodWindow
}

type floodWindow struct {
	start      time.Time
	n          int    // events in this window
	suppressed uint64 // of which not recorded
	gid        uint32
	last, code string // the last suppressed request and its error code, for the summary
}

// allow reports whether a denial of req with code to uid is recorded in
// full.
func (f *flood) allow(uid, gid uint32, req, code string) bool {
	if f.interval <= 0 {
		return true
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.windowLocked(uid, gid, now)
	w.n++
	if w.n <= f.burst {
		return true
	}
	w.suppressed++
	w.last, w.code = req, code
	return false
}

// windowLocked is uid's current window, opened at now if it has none.
func (f *flood) windowLocked(uid, gid uint32, now time.Time) *floodWindow {
	w := f.uids[uid]
	if w == nil {
		if f.uids == nil {
			f.uids = map[uint32]*floodWindow{}
		}
		w = &floodWindow{start: now, gid: gid}
		f.uids[uid] = w
	}
	return w
}

// suppress counts one more record of uid not recorded in full, outside the
// burst: the disconnect of a connection whose connect was suppressed.
func (f *flood) suppress(uid, gid uint32, req string) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.windowLocked(uid, gid, now)
	w.suppressed++
	w.last = req
}

// floodSummary is one uid's suppressed denials in an ended window.
type floodSummary struct {
	uid, gid   uint32
	suppressed uint64
	last, code string
}

// take ends the windows older than the interval (all with force) and
// returns those that suppressed something, by uid.
func (f *flood) take(force bool) []floodSummary {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []floodSummary
	for _, uid := range slices.Sorted(maps.Keys(f.uids)) {
		w := f.uids[uid]
		if !force && now.Sub(w.start) < f.interval {
			continue
		}
		if w.suppressed > 0 {
			out = append(out, floodSummary{uid: uid, gid: w.gid, suppressed: w.suppressed, last: w.last, code: w.code})
		}
		delete(f.uids, uid)
	}
	return out
}

// runFlood writes the summaries of ended windows until stop closes, then
// those of every window.
func (b *Broker) runFlood(stop <-chan struct{}) {
	t := time.NewTicker(b.flood.interval / 4)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.floodSummaries(&b.flood, false)
			b.floodSummaries(&b.connFlood, false)
		case <-stop:
			b.floodSummaries(&b.flood, true)
			b.floodSummaries(&b.connFlood, true)
			return
		}
	}
}

func (b *Broker) floodSummaries(f *flood, force bool) {
	for _, s := range f.take(force) {
		uid, gid := s.uid, s.gid
		if f == &b.connFlood {
			b.log.Warn("connections not audited one by one", "uid", uid, "records", s.suppressed, "interval", f.interval)
		} else {
			b.log.Warn("requests denied, not logged one by one", "uid", uid, "denials", s.suppressed, "last_request", s.last,
				"last_code", s.code, "interval", f.interval)
		}
		b.logAudit(Record{Event: EventSuppressed, UID: &uid, GID: &gid, Count: s.suppressed, Request: s.last, Code: s.code,
			Reason: fmt.Sprintf("%s beyond %d per %v", f.what, f.burst, f.interval)})
	}
}

// strictAuditRefuses reports, in strict audit mode, why a request that is
// audited must be refused while the audit log cannot be written.
func (s *session) strictAuditRefuses(m ipc.Message) error {
	if !s.b.cfg.AuditStrict || !s.b.audit.Failing() {
		return nil
	}
	switch m.(type) {
	case *ipc.CreateTenant, *ipc.DeleteTenant, *ipc.CreateService, *ipc.DeleteService, *ipc.AllocateVariable,
		*ipc.DeallocateVariable, *ipc.WriteVariable, *ipc.ReportVariableChanges, *ipc.GetServiceFilePath:
		s.b.stats.auditRefused.Add(1)
		return fmt.Errorf("%w: the audit log cannot be written and the broker runs with strict audit", ipc.ErrNoSpace)
	}
	return nil
}
