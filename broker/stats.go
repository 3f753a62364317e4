package broker

import (
	"sync/atomic"
	"time"

	"github.com/commy/commy/internal/ipc"
)

// unknownKind is the request type counted for a frame whose type could not
// be read or names no message. Tenant ids cannot start with "_", nor can
// message types, so it collides with neither.
const unknownKind = "_unknown"

// outcomeOK is the outcome of a request answered without an Error.
const outcomeOK = "ok"

// counters are the broker's running totals. The maps are built once, so
// reading and bumping them needs no lock. Every counter is read and written
// with atomic operations and no ordering between counters is relied on:
// a reader may see one counter bumped before another.
type counters struct {
	connections   atomic.Int64
	accepted      atomic.Uint64
	rejected      atomic.Uint64
	requests      map[string][]atomic.Uint64 // by message type, then outcome index (see outcomes)
	outcomes      []string                   // outcomeOK, then every wire error code
	outcomeIndex  map[string]int
	errors        map[string]*atomic.Uint64 // Error replies, by error code
	bytesIn       atomic.Uint64             // frame bytes read, length prefixes included
	bytesOut      atomic.Uint64             // frame bytes written, length prefixes included
	noticesSent   atomic.Uint64
	noticesMerged atomic.Uint64
	audit         map[string]*atomic.Uint64 // audit records, by event
	reloads       atomic.Uint64             // policies put in place
	reloadErrors  atomic.Uint64             // reloads that failed, keeping the old policy
	reloadFailing atomic.Bool               // the last reload failed
	recoverErrors atomic.Uint64
	damaged       atomic.Uint64 // service files quarantined at run time
	probeEvents   atomic.Uint64
	fdRefused     atomic.Uint64 // connections and services refused to keep the descriptor reserve
	auditRefused  atomic.Uint64 // requests refused by strict audit
	suppressed    atomic.Uint64 // denials not recorded one by one (see flood)
}

// auditEvents are the events the audit log records.
var auditEvents = []string{
	EventConnect, EventDisconnect, EventFilePath, EventWrite, EventReport, EventDenied, EventAdmin, EventFileAccess,
	EventSuppressed, EventAuditLost,
}

func (c *counters) init() {
	c.outcomes = append([]string{outcomeOK}, ipc.Codes()...)
	c.outcomeIndex = make(map[string]int, len(c.outcomes))
	for i, o := range c.outcomes {
		c.outcomeIndex[o] = i
	}
	c.requests = map[string][]atomic.Uint64{unknownKind: make([]atomic.Uint64, len(c.outcomes))}
	for _, k := range ipc.Kinds() {
		c.requests[k] = make([]atomic.Uint64, len(c.outcomes))
	}
	c.errors = map[string]*atomic.Uint64{}
	for _, k := range ipc.Codes() {
		c.errors[k] = new(atomic.Uint64)
	}
	c.audit = map[string]*atomic.Uint64{}
	for _, e := range auditEvents {
		c.audit[e] = new(atomic.Uint64)
	}
}

// request counts a request of type kind ("" or an unknown type counts as
// unknownKind) that ended with code ("" when it succeeded).
func (c *counters) request(kind, code string) {
	row := c.requests[kind]
	if row == nil {
		row = c.requests[unknownKind]
	}
	i := 0
	if code != "" {
		i = c.outcomeIndex[code] // CodeOf only returns known codes
	}
	row[i].Add(1)
}

func (c *counters) failed(code string) {
	if n := c.errors[code]; n != nil {
		n.Add(1)
	}
}

func (c *counters) audited(event string) {
	if n := c.audit[event]; n != nil {
		n.Add(1)
	}
}

// requestCounts calls fn for every request type and outcome counted at least
// once.
func (c *counters) requestCounts(fn func(kind, outcome string, n uint64)) {
	for k, row := range c.requests {
		for i := range row {
			if n := row[i].Load(); n > 0 {
				fn(k, c.outcomes[i], n)
			}
		}
	}
}

func snapshot(m map[string]*atomic.Uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if n := v.Load(); n > 0 {
			out[k] = n
		}
	}
	return out
}

// Stats returns the broker's figures, as the Stats message reports them.
func (b *Broker) Stats() *ipc.Stats {
	var tenants, services, variables, fileBytes uint64
	for _, u := range b.usage() {
		tenants++
		services += uint64(u.services)
		variables += uint64(u.variables)
		fileBytes += uint64(u.fileBytes)
	}
	st := &ipc.Stats{
		ServerVersion:       Version,
		UptimeSeconds:       time.Since(b.start).Seconds(),
		Connections:         uint64(max(b.stats.connections.Load(), 0)),
		ConnectionsTotal:    b.stats.accepted.Load(),
		Tenants:             tenants,
		Services:            services,
		Variables:           variables,
		Requests:            map[string]uint64{},
		Errors:              snapshot(b.stats.errors),
		NoticesSent:         b.stats.noticesSent.Load(),
		NoticesMerged:       b.stats.noticesMerged.Load(),
		AuditErrors:         b.audit.Errors(),
		Probe:               "off",
		ConnectionsRejected: b.stats.rejected.Load(),
		ServiceFileBytes:    fileBytes,
		RequestErrors:       map[string]map[string]uint64{},
		BytesIn:             b.stats.bytesIn.Load(),
		BytesOut:            b.stats.bytesOut.Load(),
		AuditEvents:         snapshot(b.stats.audit),
		PolicyReloads:       b.stats.reloads.Load(),
		PolicyReloadErrors:  b.stats.reloadErrors.Load(),
		Limits:              b.limitUsage(),
	}
	b.stats.requestCounts(func(kind, outcome string, n uint64) {
		st.Requests[kind] += n
		if outcome == outcomeOK {
			return
		}
		if st.RequestErrors[kind] == nil {
			st.RequestErrors[kind] = map[string]uint64{}
		}
		st.RequestErrors[kind][outcome] = n
	})
	if p := b.cfg.Probe; p != nil {
		ps := p.Status()
		st.Probe = ps.AttachPoint
		st.ProbeEvents = b.stats.probeEvents.Load()
		st.ProbeLost = ps.Lost
	}
	return st
}
