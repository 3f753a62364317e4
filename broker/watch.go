package broker

import (
	"net"
	"slices"
	"sync"

	"github.com/commy/commy/internal/ipc"
)

// Notices to a subscriber go through its outbox. The outbox holds at most one
// pending notice per service: when a notice arrives for a service that still
// has one waiting, the two merge into one naming every changed variable with
// its latest version. A subscriber that stops reading therefore loses no
// change, costs memory bounded by its subscriptions times their variables,
// and never blocks the broker or other clients.
//
// What waits in an outbox for the writer goroutine is charged to the
// subscriber's uid (buffered bytes); what a notifier writes at once is not.
// A subscriber whose notice would take its uid past the limit is
// disconnected (see overBudget): notices are never dropped silently.

// pending is a notice waiting in an outbox.
type pending struct {
	service string
	frame   []byte            // encoded once for every subscriber; nil once merged
	names   []string          // shared with other outboxes: never modified
	vers    []uint64          // likewise
	merged  map[string]uint64 // set once a second notice merged in
	order   []string          // names of merged, in first-seen order
	size    int               // estimated bytes of merged and order
	cost    int               // bytes charged to the uid for it
}

// pendingCost estimates the memory of a pending notice, or of names merged
// into one.
func pendingCost(frame []byte, names []string) int {
	if frame != nil {
		return len(frame)
	}
	n := 64
	for _, name := range names {
		n += len(name) + 32
	}
	return n
}

// outbox queues a session's notices. One goroutine at a time writes them:
// the notifier itself when the socket has room (deliver), saving the wake-up
// of the session's writer goroutine, or that writer goroutine, which alone
// may block on a slow reader.
type outbox struct {
	mu    sync.Mutex
	q     []*pending
	bySvc map[string]*pending
	free  []*pending // delivered, for the next push (see recycle)
	wake  chan struct{}
	busy  bool   // a goroutine is writing notices; the rest wait in q
	rest  []byte // frames a notifier could not write, for the writer to send first
	restN int    // how many notices rest holds

	budget   ipc.Budget // the uid's buffered bytes
	charged  int        // bytes of q, rest and those being written charged to budget
	restCost int        // of which for rest
	writing  int        // of which for what the goroutine writing took
	settled  bool       // the session ended: nothing more is charged

	// The writer goroutine is started by the first wake: a connection
	// whose notices were all written at once never has one.
	start   func() // starts it; nil in tests of the outbox alone
	started bool
	ended   bool // the session is ending: no writer may start now
}

func newOutbox(budget ipc.Budget) outbox {
	return outbox{bySvc: map[string]*pending{}, wake: make(chan struct{}, 1), budget: budget}
}

// chargeLocked charges n bytes waiting in the outbox.
func (o *outbox) chargeLocked(n int) error {
	if o.settled || n <= 0 {
		return nil
	}
	if err := o.budget.Charge(n); err != nil {
		return err
	}
	o.charged += n
	return nil
}

// end stops a writer from starting from now on, so that the session can
// wait for the one that did.
func (o *outbox) end() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended = true
}

// settle gives back what the outbox holds charged, once the session ended.
func (o *outbox) settle() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.settled = true
	for _, p := range o.q {
		p.cost = 0
	}
	o.restCost, o.writing = 0, 0
	if o.charged > 0 {
		o.budget.Discharge(o.charged)
		o.charged = 0
	}
}

// push queues a notice; it never blocks. It reports whether it merged, and
// whether the caller may write the queue itself (nothing being written,
// nothing handed to the writer): the caller then owns the outbox and must
// call deliver, which releases it. A notice left for the writer goroutine is
// charged to the uid; err is the charge refused (the notice is queued
// anyway, and the caller must end the session).
func (o *outbox) push(service string, frame []byte, names []string, vers []uint64) (merged, own bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := o.bySvc[service]; p != nil {
		if p.merged == nil {
			p.merged = make(map[string]uint64, len(p.names)+len(names))
			for i, n := range p.names {
				p.merged[n] = p.vers[i]
				p.order = append(p.order, n)
			}
			p.size = pendingCost(nil, p.names)
			p.frame, p.names, p.vers = nil, nil, nil
		}
		for i, n := range names {
			if _, ok := p.merged[n]; !ok {
				p.order = append(p.order, n)
				p.size += len(n) + 32
			}
			if vers[i] == 0 || vers[i] > p.merged[n] || p.merged[n] == 0 {
				p.merged[n] = vers[i]
			}
		}
		if p.cost > 0 && p.size > p.cost { // charged: it waits for the writer
			if err = o.chargeLocked(p.size - p.cost); err == nil {
				p.cost = p.size
			}
		}
		return true, false, err
	}
	p := o.newPendingLocked()
	p.service, p.frame, p.names, p.vers = service, frame, names, vers
	o.q = append(o.q, p)
	o.bySvc[service] = p
	if !o.busy && len(o.rest) == 0 {
		o.busy = true
		return false, true, nil
	}
	if err = o.chargeLocked(pendingCost(frame, names)); err == nil {
		p.cost = pendingCost(frame, names)
	}
	o.wakeLocked()
	return false, false, err
}

// maxFree bounds the delivered notices an outbox keeps for reuse.
const maxFree = 2

// newPendingLocked returns an empty pending notice, one delivered before if
// there is one.
func (o *outbox) newPendingLocked() *pending {
	if n := len(o.free); n > 0 {
		p := o.free[n-1]
		o.free[n-1] = nil
		o.free = o.free[:n-1]
		return p
	}
	return new(pending)
}

// recycle takes back notices taken from the outbox and encoded, which
// nothing else refers to any more: a fan-out to a thousand subscribers
// would otherwise leave a thousand of them for the collector each time.
func (o *outbox) recycle(ps []*pending) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		if len(o.free) >= maxFree {
			return
		}
		*p = pending{}
		o.free = append(o.free, p)
	}
}

// wakeLocked wakes the writer goroutine, starting it the first time.
func (o *outbox) wakeLocked() {
	if !o.started {
		if o.ended {
			return
		}
		o.started = true
		if o.start != nil {
			o.start()
		}
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// release ends the caller's turn at writing and gives back what the
// notices it took held charged. unsent are frames it could not write; they
// go to the writer goroutine, ahead of anything queued since, charged to the
// uid. err is the charge refused (the caller must end the session).
func (o *outbox) release(unsent []byte, n int) (err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.busy = false
	if o.writing > 0 {
		o.budget.Discharge(o.writing)
		o.charged -= o.writing
		o.writing = 0
	}
	if len(unsent) > 0 {
		o.rest = append(o.rest, unsent...)
		o.restN += n
		if err = o.chargeLocked(len(unsent)); err == nil {
			o.restCost += len(unsent)
		}
	}
	if len(o.q) > 0 || len(o.rest) > 0 {
		o.wakeLocked()
	}
	return err
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
		if p.cost > 0 {
			o.budget.Discharge(p.cost)
			o.charged -= p.cost
		}
	}
}

// takeLocked removes every pending notice for the caller to write. What
// they hold charged stays charged until the caller's release, or settle.
func (o *outbox) takeLocked(into []*pending) []*pending {
	for _, p := range o.q {
		o.writing += p.cost
		p.cost = 0
	}
	into = append(into, o.q...)
	clear(o.q)
	o.q = o.q[:0]
	clear(o.bySvc)
	return into
}

// take makes the caller the outbox's writer, unless another goroutine is
// writing, and then removes every pending notice and the frames handed over
// by release (see takeLocked).
func (o *outbox) take(into []*pending) (batch []*pending, rest []byte, n int, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.busy {
		return into, nil, 0, false
	}
	o.busy = true
	rest, n = o.rest, o.restN
	o.rest, o.restN = nil, 0
	o.writing += o.restCost
	o.restCost = 0
	return o.takeLocked(into), rest, n, true
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
// piled up into one writev. It waits when a notifier is writing: that one
// wakes it again if more is queued when it is done.
func (s *session) writeLoop() {
	var batch []*pending
	var bufs net.Buffers
	for {
		select {
		case <-s.out.wake:
		case <-s.done:
			return
		}
		var rest []byte
		var restN int
		var ok bool
		batch, rest, restN, ok = s.out.take(batch[:0])
		if !ok {
			continue
		}
		bufs = bufs[:0]
		if len(rest) > 0 {
			bufs = append(bufs, rest)
		}
		bufs, n, size := s.encode(batch, bufs)
		clear(batch)
		n, size = n+restN, size+len(rest)
		var err error
		if size > 0 {
			err = s.conn.WriteFrames(bufs)
		}
		s.out.release(nil, 0)
		if err != nil {
			s.close()
			return
		}
		s.b.stats.noticesSent.Add(uint64(n))
		s.b.stats.bytesOut.Add(uint64(size))
	}
}

// encode appends the frames of batch to bufs, with how many there are and
// their size.
func (s *session) encode(batch []*pending, bufs net.Buffers) (net.Buffers, int, int) {
	n, size := 0, 0
	for _, p := range batch {
		f, err := p.encode()
		if err != nil {
			s.b.log.Error("notice dropped: cannot encode", "service", p.service, "err", err)
			continue
		}
		bufs = append(bufs, f)
		n++
		size += len(f)
	}
	return bufs, n, size
}

// scratch is reusable space for deliver.
type scratch struct {
	batch []*pending
	buf   []byte
}

// deliver writes the outbox's notices, which the caller owns by push: at
// once if the socket has room, else it hands them to the writer goroutine.
// It never blocks on the subscriber, and it releases the outbox.
func (s *session) deliver(sc *scratch) {
	buf, n := s.takeFrames(&sc.batch, sc.buf[:0])
	ok, err := s.conn.TryWrite(buf)
	s.delivered(buf, n, ok, err)
	sc.buf = buf
	if cap(buf) > 2*ipc.MaxTryWrite {
		sc.buf = nil // not worth keeping
	}
}

// takeFrames takes the notices of the outbox, which the caller owns, and
// appends their frames to buf; n is how many.
func (s *session) takeFrames(batch *[]*pending, buf []byte) (_ []byte, n int) {
	s.out.mu.Lock()
	*batch = s.out.takeLocked((*batch)[:0])
	s.out.mu.Unlock()
	for _, p := range *batch {
		f, err := p.encode()
		if err != nil {
			s.b.log.Error("notice dropped: cannot encode", "service", p.service, "err", err)
			continue
		}
		buf = append(buf, f...)
		n++
	}
	s.out.recycle(*batch)
	clear(*batch)
	return buf, n
}

// delivered finishes the delivery of buf, n notices, after a write that
// reported ok and err as TryWrite does, and releases the outbox: what was
// not written goes to the writer goroutine.
func (s *session) delivered(buf []byte, n int, ok bool, err error) {
	switch {
	case err != nil:
		s.out.release(nil, 0)
		s.close() // the connection is broken; its reader sees it
	case ok:
		s.out.release(nil, 0)
		s.b.stats.noticesSent.Add(uint64(n))
		s.b.stats.bytesOut.Add(uint64(len(buf)))
	default:
		if err := s.out.release(buf, n); err != nil {
			s.overBudget(err)
		}
	}
}

// batchMin is how many outboxes deliverAll writes as one ipc.SendBatch
// (through io_uring where the kernel has it); fewer are written one by one.
const batchMin = 4

// fanBatch is reusable space for deliverAll, shared by the goroutines that
// fan out through a pool: a fan-out to a thousand subscribers takes about
// 100 KiB, which no session should keep.
type fanBatch struct {
	batch []*pending
	buf   []byte
	spans []int // where each session's frames end in buf, and how many
	sends ipc.SendBatch
}

var fanBatches = sync.Pool{New: func() any { return new(fanBatch) }}

// deliverAll delivers the outboxes of sessions, which the caller owns, as
// deliver does each, but writes them together.
func deliverAll(sessions []*session, sc *scratch) {
	if len(sessions) < batchMin {
		for _, sess := range sessions {
			sess.deliver(sc)
		}
		return
	}
	fb := fanBatches.Get().(*fanBatch)
	fb.sends.Sendto = !sessions[0].b.uring
	buf, spans := fb.buf[:0], fb.spans[:0]
	for _, sess := range sessions {
		var n int
		buf, n = sess.takeFrames(&fb.batch, buf)
		spans = append(spans, len(buf), n)
	}
	start := 0
	for i, sess := range sessions {
		fb.sends.Add(sess.conn, buf[start:spans[2*i]])
		start = spans[2*i]
	}
	fb.sends.Flush(func(i int, ok bool, err error) {
		start := 0
		if i > 0 {
			start = spans[2*i-2]
		}
		sessions[i].delivered(buf[start:spans[2*i]], spans[2*i+1], ok, err)
	})
	fb.buf, fb.spans = buf, spans
	if cap(buf) > 1<<20 {
		fb.buf = nil
	}
	fanBatches.Put(fb)
}

// payOwed delivers the notices the session's last request owes to other
// sessions (see notify), before its reply: the subscribers learn of the
// change as soon as they can. When it owes more than replyFirst outboxes, its
// reply goes first if the socket takes it at once, so a writer with many
// subscribers is not kept waiting behind all of them.
func (s *session) payOwed() {
	if len(s.owed) == 0 {
		return
	}
	if len(s.owed) > replyFirst && len(s.wbuf) > 0 {
		if ok, err := s.conn.TryWrite(s.wbuf); ok && err == nil {
			s.b.stats.bytesOut.Add(uint64(len(s.wbuf)))
			s.wbuf = s.wbuf[:0]
		}
	}
	owed := s.owed
	if len(owed) >= fanSplit && s.b.fan != nil {
		half := len(owed) / 2
		select {
		case s.b.fan <- slices.Clone(owed[half:]):
			owed = owed[:half]
		default: // the helpers are busy: write them all here
		}
	}
	deliverAll(owed, &s.sc)
	clear(s.owed)
	s.owed = s.owed[:0]
}

// fanSplit is how many outboxes a session must owe before it hands half of
// them to a fan-out helper, so that two CPUs write the sockets at once. Below
// it, waking the helper costs more than it saves.
const fanSplit = 64

// runFanout is a fan-out helper: it delivers the outboxes a session handed
// over, which it owns until deliver releases them, until jobs is closed.
func runFanout(jobs <-chan []*session) {
	var sc scratch
	for batch := range jobs {
		deliverAll(batch, &sc)
	}
}

// replyFirst is how many notices payOwed writes before a reply.
const replyFirst = 16

// notify queues a VariablesUpdated notice for every subscriber of svc but
// the sender. Outboxes nobody is writing are the sender's to deliver, after
// its reply (payOwed); without a sender they are delivered here. The caller holds svc.mu, so notices are queued in the order the
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
			merged, own, err := sess.out.push(svc.id, frame, names, vers)
			if merged {
				b.stats.noticesMerged.Add(1)
			}
			if err != nil {
				sess.overBudget(err)
			}
			if own {
				owe(svc, sender, sess)
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
		if len(fn) == 0 {
			continue
		}
		merged, own, err := sess.out.push(svc.id, nil, fn, fv)
		if merged {
			b.stats.noticesMerged.Add(1)
		}
		if err != nil {
			sess.overBudget(err)
		}
		if own {
			owe(svc, sender, sess)
		}
	}
}

// overBudget ends a subscriber whose unsent notices would take its uid
// past its buffered bytes: its notices already merge per service, so the
// only way left to bound them is to disconnect it. The client sees the
// connection end, never a notice silently missing. Its unsent notices
// will never go out, so what they hold charged is given back at once, not
// once its reader and writer have finished: the uid's other connections do
// not pay for one that has ended.
func (s *session) overBudget(err error) {
	s.overOnce.Do(func() {
		s.b.log.Warn("subscriber disconnected: unsent notices over its uid's limit", "client_id", s.caller.ClientID,
			"pid", s.caller.PID, "uid", s.caller.UID, "err", err)
		s.close()
		s.out.settle()
	})
}

// owe makes sender deliver sess's notices after its reply, or delivers them
// now when there is no sender. The caller holds svc.mu.
func owe(svc *service, sender, sess *session) {
	if sender == nil {
		sess.deliver(&svc.sc)
		return
	}
	sender.owed = append(sender.owed, sess)
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
