package bridge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/commy/commy/client"
)

// localSvc is a federated service of the local broker: a mapping to read
// its values and a subscription whose notices its watcher handles. The
// watcher owns both and closes them when it ends; the fields other than
// svc, m and sub are guarded by Bridge.mu.
type localSvc struct {
	svc      *client.Service
	m        *client.Mapping
	sub      *client.Subscription
	deferred map[string]uint64 // notified versions held back for a consistent read
	held     *client.Notice    // a notice that came while the gate was shut

	cancel context.CancelFunc // ends the watcher
}

// scan registers every federated service the broker has that the bridge
// does not watch yet. The caller holds mu.
func (b *Bridge) scan(ctx context.Context) error {
	tenants, err := b.cl.Tenants(ctx)
	if err != nil {
		return fmt.Errorf("bridge: list tenants: %w", err)
	}
	for _, t := range tenants {
		if !b.cfg.tenantMayMatch(t) {
			continue
		}
		svcs, err := b.cl.Services(ctx, t)
		if err != nil {
			if errors.Is(err, client.ErrTenantNotFound) || errors.Is(err, client.ErrPermissionDenied) {
				continue
			}
			return fmt.Errorf("bridge: list services of %s: %w", t, err)
		}
		for _, si := range svcs {
			k := svcKey{t, si.ServiceName}
			if b.svcs[k] != nil || !b.cfg.federated(t, si.ServiceName) {
				continue
			}
			ls, err := b.register(ctx, k)
			if errors.Is(err, client.ErrServiceNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if b.caughtUp {
				b.reconcile(k, ls)
			}
		}
	}
	return nil
}

// register maps and subscribes to a service. The subscription comes first:
// a change made while the mapping is set up is then notified.
func (b *Bridge) register(ctx context.Context, k svcKey) (*localSvc, error) {
	svc, err := b.cl.Service(ctx, k.tenant, k.service)
	if err != nil {
		return nil, fmt.Errorf("bridge: service %s: %w", k, err)
	}
	sub, err := svc.Subscribe(ctx)
	if err != nil {
		return nil, fmt.Errorf("bridge: subscribe to %s: %w", k, err)
	}
	m, err := svc.Map(ctx)
	if err != nil {
		sub.Close()
		return nil, fmt.Errorf("bridge: map %s: %w", k, err)
	}
	sctx, cancel := context.WithCancel(b.ctx)
	ls := &localSvc{svc: svc, m: m, sub: sub, cancel: cancel}
	b.subWG.Add(1)
	go b.watch(sctx, k, ls)
	b.svcs[k] = ls
	b.log.Info("federating service", "service", k.String(), "local_mapping", m.Local())
	return ls, nil
}

// watch handles the notices of one service on its own goroutine, which
// reads the changed values and publishes them, so that a notice reaches NATS
// with no other goroutine woken on the way. While the gate is shut (catching
// up, or too much waiting for JetStream) it leaves the notices to merge in
// the subscription.
func (b *Bridge) watch(ctx context.Context, k svcKey, ls *localSvc) {
	defer b.subWG.Done()
	defer func() {
		ls.sub.Close()
		ls.m.Close()
	}()
	for {
		b.mu.Lock()
		gate := b.gate
		b.mu.Unlock()
		select {
		case <-gate:
		case <-ctx.Done():
			return
		}
		b.mu.Lock()
		if held := ls.held; held != nil && ctx.Err() == nil {
			ls.held = nil
			b.handleLocal(k, ls, *held, nil)
		}
		again := ls.held != nil // the gate shut again: wait for it, not for a notice
		b.mu.Unlock()
		if again {
			continue
		}
		n, err := ls.sub.Next(ctx)
		if ctx.Err() != nil {
			return
		}
		b.mu.Lock()
		if ctx.Err() == nil {
			b.handleLocal(k, ls, n, err)
		}
		b.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// unregister stops watching a service; its watcher closes the mapping and
// the subscription. The caller holds mu.
func (b *Bridge) unregister(k svcKey) {
	if ls := b.svcs[k]; ls != nil {
		ls.cancel()
		delete(b.svcs, k)
	}
}

// snapshot reads every variable of a service from its mapping.
func snapshot(ctx context.Context, ls *localSvc) (map[string][]byte, error) {
	vars, err := ls.m.Variables(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(vars))
	for _, v := range vars {
		data, _, err := ls.m.Read(v.Name, nil)
		if errors.Is(err, client.ErrVariableNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[v.Name] = data
	}
	return out, nil
}

// diffAtStart finds what changed in services the saved state knows while
// the bridge was away. The stream's batches for those variables are not
// applied during the catch-up (unless they carry the very value: then the
// change was an apply the state did not record), and the changes are
// published once caught up: they are later than anything in the stream.
func (b *Bridge) diffAtStart() {
	for k, ls := range b.svcs {
		saved, ok := b.st.Vars[k]
		if !ok {
			continue
		}
		ctx, cancel := b.opCtx()
		vals, err := snapshot(ctx, ls)
		cancel()
		if err != nil {
			b.log.Warn("cannot read service at start", "service", k.String(), "err", err)
			continue
		}
		diff := map[string]*digest{}
		for n, data := range vals {
			d := digestOf(data)
			if s, ok := saved[n]; !ok || s.Digest != d {
				diff[n] = &d
			}
		}
		for n := range saved {
			if _, ok := vals[n]; !ok {
				diff[n] = nil
			}
		}
		if len(diff) > 0 {
			b.startDiff[k] = diff
			b.log.Info("local changes made while the bridge was away", "service", k.String(), "variables", len(diff))
		}
	}
}

// reconcile publishes whatever of a service differs from what the stream
// holds: values changed while nobody watched, a service new to the
// federation (as one batch, even when empty).
func (b *Bridge) reconcile(k svcKey, ls *localSvc) {
	ctx, cancel := b.opCtx()
	vals, err := snapshot(ctx, ls)
	cancel()
	if err != nil {
		b.log.Warn("cannot read service", "service", k.String(), "err", err)
		return
	}
	known, had := b.known[k]
	bt := &batch{Tenant: k.tenant, Service: k.service}
	for _, n := range slices.Sorted(maps.Keys(vals)) {
		if d, ok := known[n]; !ok || d != digestOf(vals[n]) {
			bt.Set = append(bt.Set, value{Name: n, Data: vals[n]})
		}
	}
	for _, n := range slices.Sorted(maps.Keys(known)) {
		if _, ok := vals[n]; !ok {
			bt.Del = append(bt.Del, n)
		}
	}
	if had && len(bt.Set) == 0 && len(bt.Del) == 0 {
		return
	}
	b.enqueue(k, bt)
}

// handleLocal turns a notice into a batch of the values it names, read from
// the mapping. If a value is already newer than notified, a local write is
// under way and its notice will come: the variables wait for it, so that a
// batch never mixes two local batches. While the gate is shut the notice is
// held for when it opens. The caller holds mu.
func (b *Bridge) handleLocal(k svcKey, ls *localSvc, note client.Notice, nerr error) {
	if b.svcs[k] != ls {
		return // an old registration's
	}
	if nerr != nil {
		if !errors.Is(nerr, client.ErrClosed) {
			b.log.Warn("subscription ended; the service is watched again once the broker lists it", "service", k.String(), "err", nerr)
		}
		b.unregister(k)
		return
	}
	if !b.caughtUp || b.paused {
		ls.held = mergeNotice(ls.held, note)
		return
	}
	want := ls.deferred
	ls.deferred = nil
	if want == nil {
		want = map[string]uint64{}
	}
	gone := len(note.Variables) > 0
	for i, n := range note.Variables {
		want[n] = note.Versions[i]
		gone = gone && note.Versions[i] == 0
	}
	if gone && b.serviceGone(k) {
		b.unregister(k)
		if _, ok := b.known[k]; ok {
			b.enqueue(k, &batch{Tenant: k.tenant, Service: k.service, Kind: kindDeleted})
		}
		return
	}
	known := b.known[k]
	bt := &batch{Tenant: k.tenant, Service: k.service}
	for _, n := range slices.Sorted(maps.Keys(want)) {
		data, ver, err := ls.m.Read(n, nil)
		if errors.Is(err, client.ErrVariableNotFound) {
			if _, ok := known[n]; ok {
				bt.Del = append(bt.Del, n)
			}
			continue
		}
		if err != nil {
			b.log.Warn("cannot read local value; waiting for the next notice", "service", k.String(), "variable", n, "err", err)
			ls.deferred = want
			return
		}
		if d, ok := known[n]; ok && d == digestOf(data) {
			continue // unchanged, or the bridge's own apply
		}
		if w := want[n]; w != 0 && ver > w {
			ls.deferred = want // a newer local write is being applied
			return
		}
		bt.Set = append(bt.Set, value{Name: n, Data: data, Version: ver})
	}
	if len(bt.Set) > 0 || len(bt.Del) > 0 {
		b.enqueue(k, bt)
	}
}

// mergeNotice adds n to held, the later version of a variable winning.
func mergeNotice(held *client.Notice, n client.Notice) *client.Notice {
	if held == nil {
		return &client.Notice{ServiceID: n.ServiceID, Variables: slices.Clone(n.Variables), Versions: slices.Clone(n.Versions)}
	}
	for i, name := range n.Variables {
		if j := slices.Index(held.Variables, name); j >= 0 {
			held.Versions[j] = n.Versions[i]
		} else {
			held.Variables = append(held.Variables, name)
			held.Versions = append(held.Versions, n.Versions[i])
		}
	}
	return held
}

// serviceGone reports whether the broker says the service does not exist.
func (b *Bridge) serviceGone(k svcKey) bool {
	err := b.retry("GetService", func(ctx context.Context) error {
		_, err := b.cl.Service(ctx, k.tenant, k.service)
		return err
	})
	return errors.Is(err, client.ErrServiceNotFound)
}

// enqueue queues a batch and publishes it if nothing is in flight: values over the NATS message
// limit are refused, a batch over it is split. What it carries becomes
// known, and pending until seen in the stream.
func (b *Bridge) enqueue(k svcKey, bt *batch) {
	bt.Origin, bt.Time = b.cfg.HostID, time.Now().UnixNano()
	limit := int(b.nc.MaxPayload())
	if limit <= 0 {
		limit = 1 << 20
	}
	limit -= 1024 // headers and framing
	var parts []*batch
	cur := &batch{Origin: bt.Origin, Tenant: bt.Tenant, Service: bt.Service, Kind: bt.Kind, Time: bt.Time, Del: bt.Del}
	for _, v := range bt.Set {
		one := &batch{Origin: bt.Origin, Tenant: bt.Tenant, Service: bt.Service, Set: []value{v}}
		if one.size() > limit {
			b.stats.refused.WithLabelValues("too_large").Inc()
			b.log.Error("value not replicated: larger than the NATS message limit", "service", k.String(), "variable", v.Name,
				"bytes", len(v.Data), "limit", limit)
			continue
		}
		if cur.size()+one.size() > limit {
			parts = append(parts, cur)
			cur = &batch{Origin: bt.Origin, Tenant: bt.Tenant, Service: bt.Service, Time: bt.Time}
		}
		cur.Set = append(cur.Set, v)
	}
	parts = append(parts, cur)
	if len(parts) > 1 {
		b.stats.split.Inc()
		b.log.Warn("batch larger than the NATS message limit sent as several messages (not atomic)", "service", k.String(),
			"messages", len(parts), "limit", limit)
	}
	if len(bt.Set) > 0 && len(parts) == 1 && len(cur.Set) == 0 && len(cur.Del) == 0 && cur.Kind == kindValues {
		return // everything refused
	}
	if b.known[k] == nil {
		b.known[k] = map[string]digest{}
	}
	for _, p := range parts {
		ob := &ownBatch{k: k, kind: p.Kind, vars: map[string]*digest{}}
		for _, v := range p.Set {
			d := digestOf(v.Data)
			ob.vars[v.Name] = &d
			b.known[k][v.Name] = d
		}
		for _, n := range p.Del {
			ob.vars[n] = nil
			delete(b.known[k], n)
		}
		if p.Kind == kindDeleted {
			delete(b.known, k)
		}
		data, err := p.encode()
		if err != nil {
			b.log.Error("batch not encoded", "service", k.String(), "err", err)
			continue
		}
		id := fmt.Sprintf("%s.%s.%d", b.cfg.HostID, b.runID, b.msgN.Add(1))
		b.awaiting[id] = ob
		b.pend(k, ob, 1)
		b.out.push(&outMsg{id: id, subj: subject(b.cfg.JetStream.SubjectPrefix, k.tenant, k.service), data: data, k: k, b: p})
	}
	b.bound()
	b.sendLocked()
}

// pend adds d to the pending count of every variable of ob.
func (b *Bridge) pend(k svcKey, ob *ownBatch, d int) {
	m := b.pendingOwn[k]
	if m == nil {
		m = map[string]int{}
		b.pendingOwn[k] = m
	}
	if ob.kind == kindDeleted {
		m[""] += d // the service itself
	}
	for n := range ob.vars {
		m[n] += d
		if m[n] <= 0 {
			delete(m, n)
		}
	}
	if m[""] <= 0 {
		delete(m, "")
	}
	if len(m) == 0 {
		delete(b.pendingOwn, k)
	}
}

// bound keeps the batches waiting for JetStream within the configured
// bounds: past them it merges the waiting batches of each service into one,
// and if that is not enough it stops reading local notices (the broker keeps
// the changes; the subscriptions merge them) until JetStream takes some.
func (b *Bridge) bound() {
	n, bytes := b.out.len()
	b.stats.pending.Set(float64(n))
	b.stats.pendingB.Set(float64(bytes))
	over := func() bool {
		n, bytes := b.out.len()
		return n > b.cfg.MaxPending || bytes > b.cfg.MaxPendingBytes
	}
	if !over() {
		if b.paused {
			b.paused = false
			b.setGateLocked()
			b.log.Info("pending batches back within bounds; reading local changes again")
		}
		return
	}
	if b.paused {
		return
	}
	before, _ := b.out.len()
	b.out.merge(func(old []*outMsg) []*outMsg { return b.mergeOut(old) })
	after, _ := b.out.len()
	b.stats.outboxFull.WithLabelValues("merged").Inc()
	b.log.Warn("pending batches over their bound: merged per service (latest value of each variable kept)",
		"before", before, "after", after, "max_pending", b.cfg.MaxPending, "max_pending_bytes", b.cfg.MaxPendingBytes)
	if over() {
		b.paused = true
		b.setGateLocked()
		b.stats.outboxFull.WithLabelValues("paused").Inc()
		b.log.Warn("pending batches still over their bound: local changes wait in the broker until NATS takes some")
	}
	n, bytes = b.out.len()
	b.stats.pending.Set(float64(n))
	b.stats.pendingB.Set(float64(bytes))
}

// mergeOut merges waiting messages into one per service, in the order of
// their first message; the later value or deletion of a variable wins.
func (b *Bridge) mergeOut(old []*outMsg) []*outMsg {
	var order []svcKey
	merged := map[svcKey]*batch{}
	for _, m := range old {
		ob := b.awaiting[m.id]
		delete(b.awaiting, m.id)
		if ob != nil {
			b.pend(m.k, ob, -1)
		}
		cur := merged[m.k]
		if cur == nil {
			order = append(order, m.k)
			cur = &batch{Origin: m.b.Origin, Tenant: m.b.Tenant, Service: m.b.Service}
			merged[m.k] = cur
		}
		cur.Time = m.b.Time
		if m.b.Kind == kindDeleted {
			cur.Kind, cur.Set, cur.Del = kindDeleted, nil, nil
			continue
		}
		if cur.Kind == kindDeleted {
			cur.Kind = kindValues
		}
		for _, v := range m.b.Set {
			cur.Del = slices.DeleteFunc(cur.Del, func(n string) bool { return n == v.Name })
			cur.Set = slices.DeleteFunc(cur.Set, func(x value) bool { return x.Name == v.Name })
			cur.Set = append(cur.Set, v)
		}
		for _, n := range m.b.Del {
			cur.Set = slices.DeleteFunc(cur.Set, func(x value) bool { return x.Name == n })
			if !slices.Contains(cur.Del, n) {
				cur.Del = append(cur.Del, n)
			}
		}
	}
	var out []*outMsg
	for _, k := range order {
		p := merged[k]
		data, err := p.encode()
		if err != nil {
			b.log.Error("merged batch not encoded", "service", k.String(), "err", err)
			continue
		}
		ob := &ownBatch{k: k, kind: p.Kind, vars: map[string]*digest{}}
		for _, v := range p.Set {
			d := digestOf(v.Data)
			ob.vars[v.Name] = &d
		}
		for _, n := range p.Del {
			ob.vars[n] = nil
		}
		id := fmt.Sprintf("%s.%s.%d", b.cfg.HostID, b.runID, b.msgN.Add(1))
		b.awaiting[id] = ob
		b.pend(k, ob, 1)
		out = append(out, &outMsg{id: id, subj: subject(b.cfg.JetStream.SubjectPrefix, k.tenant, k.service), data: data, k: k, b: p})
	}
	return out
}
