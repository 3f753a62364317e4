package broker

import (
	"net"
	"sync"

	"github.com/commy/commy/ipc"
)

// Notices to a subscriber go through its outbox. The outbox holds at most one
// pending notice per service: when a notice arrives for a service that still
// has one waiting, the two merge into one naming every changed variable with
// its latest version. A subscriber that stops reading therefore loses no
// change, costs memory bounded by its subscriptions times their variables,
// and never blocks the broker or other clients.

// pending is a notice waiting in an outbox.
type pending struct {
	service string
	frame   []byte            // encoded once for every subscriber; nil once merged
	names   []string          // shared with other outboxes: never modified
	vers    []uint64          // likewise
	merged  map[string]uint64 // set once a second notice merged in
	order   []string          // names of merged, in first-seen order
}

type outbox struct {
	mu    sync.Mutex
	q     []*pending
	bySvc map[string]*pending
	wake  chan struct{}
}

func newOutbox() outbox {
	return outbox{bySvc: map[string]*pending{}, wake: make(chan struct{}, 1)}
}

// push queues a notice; it never blocks. It reports whether it merged.
func (o *outbox) push(service string, frame []byte, names []string, vers []uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := o.bySvc[service]; p != nil {
		if p.merged == nil {
			p.merged = make(map[string]uint64, len(p.names)+len(names))
			for i, n := range p.names {
				p.merged[n] = p.vers[i]
				p.order = append(p.order, n)
			}
			p.frame, p.names, p.vers = nil, nil, nil
		}
		for i, n := range names {
			if _, ok := p.merged[n]; !ok {
				p.order = append(p.order, n)
			}
			if vers[i] == 0 || vers[i] > p.merged[n] || p.merged[n] == 0 {
				p.merged[n] = vers[i]
			}
		}
		return true
	}
	p := &pending{service: service, frame: frame, names: names, vers: vers}
	o.q = append(o.q, p)
	o.bySvc[service] = p
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return false
}

// drop forgets a pending notice of a service (after Unsubscribe).
func (o *outbox) drop(service string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := o.bySvc[service]; p != nil {
		delete(o.bySvc, service)
		for i, q := range o.q {
			if q == p {
				o.q = append(o.q[:i], o.q[i+1:]...)
				break
			}
		}
	}
}

// take removes every pending notice.
func (o *outbox) take(into []*pending) []*pending {
	o.mu.Lock()
	defer o.mu.Unlock()
	into = append(into, o.q...)
	clear(o.q)
	o.q = o.q[:0]
	clear(o.bySvc)
	return into
}

// frame encodes a notice that was merged or filtered.
func (p *pending) encode() ([]byte, error) {
	if p.frame != nil {
		return p.frame, nil
	}
	m := &ipc.VariablesUpdated{ServiceID: p.service}
	if p.merged == nil {
		m.Variables, m.Versions = p.names, p.vers
	} else {
		for _, n := range p.order {
			m.Variables = append(m.Variables, n)
			m.Versions = append(m.Versions, p.merged[n])
		}
	}
	return ipc.EncodeFrame(m)
}

// writeLoop sends queued notices until the session ends, batching what
// piled up into one writev.
func (s *session) writeLoop() {
	var batch []*pending
	var bufs net.Buffers
	for {
		select {
		case <-s.out.wake:
		case <-s.done:
			return
		}
		batch = s.out.take(batch[:0])
		bufs = bufs[:0]
		size := 0
		for _, p := range batch {
			f, err := p.encode()
			if err != nil {
				s.b.log.Error("notice dropped: cannot encode", "service", p.service, "err", err)
				continue
			}
			bufs = append(bufs, f)
			size += len(f)
		}
		clear(batch)
		n := len(bufs)
		if n == 0 {
			continue
		}
		if err := s.conn.WriteFrames(bufs); err != nil {
			s.close()
			return
		}
		s.b.stats.noticesSent.Add(uint64(n))
		s.b.stats.bytesOut.Add(uint64(size))
	}
}

// notify queues a VariablesUpdated notice for every subscriber of svc but
// the sender. The caller holds svc.mu, so notices are queued in the order the
// changes were applied. The notice is encoded once for all subscribers that
// take every variable.
func (b *Broker) notify(svc *service, sender *session, names []string, vers []uint64) {
	var frame []byte
	for sess, sub := range svc.subs {
		if sess == sender {
			continue
		}
		if sub.filter == nil {
			if frame == nil {
				var err error
				if frame, err = ipc.EncodeFrame(&ipc.VariablesUpdated{ServiceID: svc.id, Variables: names, Versions: vers}); err != nil {
					b.log.Error("notice dropped: cannot encode", "service", svc.id, "err", err)
					return
				}
			}
			if sess.out.push(svc.id, frame, names, vers) {
				b.stats.noticesMerged.Add(1)
			}
			continue
		}
		var fn []string
		var fv []uint64
		for i, n := range names {
			if sub.filter[n] {
				fn, fv = append(fn, n), append(fv, vers[i])
			}
		}
		if len(fn) > 0 && sess.out.push(svc.id, nil, fn, fv) {
			b.stats.noticesMerged.Add(1)
		}
	}
}

// subscription is one session's interest in one service.
type subscription struct {
	filter map[string]bool // nil: every variable
}

// unsubscribeAll ends every subscription of the session.
func (s *session) unsubscribeAll() {
	s.subMu.Lock()
	subs := s.subs
	s.subs = map[string]*service{}
	s.subMu.Unlock()
	for _, svc := range subs {
		svc.mu.Lock()
		s.b.endSubscription(svc, s)
		svc.mu.Unlock()
	}
}
