package bridge

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/commy/commy/client"
)

// applyRemote processes one stream message, in stream order. Another
// host's batch is applied through the broker: values of existing variables
// in one ReportVariableChanges, new variables allocated first. A variable
// this host wrote later (its batch is not yet in the stream) keeps its
// value: that batch comes after this one and wins everywhere.
func (b *Bridge) applyRemote(m remoteMsg) {
	if m.reset {
		b.st.LastSeq, b.dirty = 0, true
		return
	}
	defer func() {
		if b.ctx.Err() != nil {
			return // stopped half way: the next run applies it again
		}
		if m.seq > b.st.LastSeq {
			b.st.LastSeq = m.seq
			b.stats.lastSeq.Set(float64(m.seq))
			b.dirty = true
		}
	}()
	bt := m.b
	if bt == nil {
		return
	}
	k := svcKey{bt.Tenant, bt.Service}
	if !b.cfg.federated(k.tenant, k.service) {
		return
	}
	if ob := b.awaiting[m.id]; ob != nil && bt.Origin == b.cfg.HostID {
		// This run's own batch: already applied here.
		delete(b.awaiting, m.id)
		b.pend(k, ob, -1)
		b.record(k, m.seq, bt)
		return
	}
	if bt.Kind == kindDeleted {
		b.applyDelete(k, m.seq)
		return
	}
	pend := b.pendingOwn[k]
	diff := b.startDiff[k]
	skip := func(name string, d *digest) bool {
		if pend[name] > 0 || pend[""] > 0 {
			return true
		}
		if sd, ok := diff[name]; ok {
			if sd != nil && d != nil && *sd == *d || sd == nil && d == nil {
				delete(diff, name) // the local value is this one: not a local change
				return false
			}
			return true
		}
		return false
	}

	ls, err := b.ensureService(k)
	if b.ctx.Err() != nil {
		return
	}
	if err != nil {
		b.stats.applyErrs.Inc()
		b.log.Error("remote batch not applied: cannot create the service", "service", k.String(), "sequence", m.seq, "err", err)
		return
	}
	var report []client.NamedValue
	var alloc []value
	applied := &batch{Tenant: k.tenant, Service: k.service}
	conflicts := 0
	for _, v := range bt.Set {
		d := digestOf(v.Data)
		if skip(v.Name, &d) {
			conflicts++
			continue
		}
		applied.Set = append(applied.Set, v)
		cur, _, err := ls.m.Read(v.Name, nil)
		switch {
		case errors.Is(err, client.ErrVariableNotFound):
			alloc = append(alloc, v)
		case err == nil && bytes.Equal(cur, v.Data):
			// Already there (a replay after a restart).
		default:
			report = append(report, client.NamedValue{Name: v.Name, Value: v.Data})
		}
	}
	var dels []string
	for _, n := range bt.Del {
		if skip(n, nil) {
			conflicts++
			continue
		}
		applied.Del = append(applied.Del, n)
		dels = append(dels, n)
	}
	b.stats.conflicts.Add(float64(conflicts))

	for _, v := range alloc {
		err := b.retry("AllocateVariable", func(ctx context.Context) error {
			_, err := ls.svc.Allocate(ctx, v.Name, v.Data, 0)
			return err
		})
		if b.ctx.Err() != nil {
			return
		}
		if errors.Is(err, client.ErrAlreadyExists) {
			report = append(report, client.NamedValue{Name: v.Name, Value: v.Data})
		} else if err != nil {
			b.refuse(k, v.Name, m.seq, err)
			applied.Set = deleteValue(applied.Set, v.Name)
		}
	}
	if len(report) > 0 {
		err := b.retry("ReportVariableChanges", func(ctx context.Context) error { return ls.svc.Report(ctx, report) })
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			b.stats.applyErrs.Inc()
			b.log.Error("remote batch not applied: the broker refused it", "service", k.String(), "sequence", m.seq,
				"origin", bt.Origin, "variables", len(report), "err", err)
			for _, r := range report {
				applied.Set = deleteValue(applied.Set, r.Name)
			}
		}
	}
	for _, n := range dels {
		err := b.retry("DeallocateVariable", func(ctx context.Context) error { return ls.svc.Deallocate(ctx, n) })
		if b.ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, client.ErrVariableNotFound) {
			b.refuse(k, n, m.seq, err)
		}
	}
	b.record(k, m.seq, applied)
	b.stats.applied.Inc()
	if bt.Time > 0 {
		b.lastLag = time.Since(time.Unix(0, bt.Time))
		b.stats.lag.Observe(b.lastLag.Seconds())
	}
}

func deleteValue(vs []value, name string) []value {
	for i, v := range vs {
		if v.Name == name {
			return append(vs[:i:i], vs[i+1:]...)
		}
	}
	return vs
}

// refuse logs a remote value the local broker would not take.
func (b *Bridge) refuse(k svcKey, name string, seq uint64, err error) {
	b.stats.refused.WithLabelValues("rejected").Inc()
	b.log.Error("remote value not applied: the broker refused it", "service", k.String(), "variable", name, "sequence", seq, "err", err)
}

// record notes that the stream holds bt's values at seq: they are known,
// and durable unless a later sequence is recorded for them already.
func (b *Bridge) record(k svcKey, seq uint64, bt *batch) {
	if b.known[k] == nil {
		b.known[k] = map[string]digest{}
	}
	vars := b.st.Vars[k]
	if vars == nil {
		vars = map[string]durable{}
		b.st.Vars[k] = vars
	}
	pend := b.pendingOwn[k]
	for _, v := range bt.Set {
		d := digestOf(v.Data)
		if pend[v.Name] == 0 {
			b.known[k][v.Name] = d
		}
		if vars[v.Name].Seq < seq {
			vars[v.Name] = durable{Digest: d, Seq: seq}
		}
	}
	for _, n := range bt.Del {
		if pend[n] == 0 {
			delete(b.known[k], n)
		}
		if vars[n].Seq < seq {
			delete(vars, n)
		}
	}
	b.dirty = true
}

// applyDelete deletes a service another host deleted, unless this host
// wrote to it since (then its batch, later in the stream, recreates it).
func (b *Bridge) applyDelete(k svcKey, seq uint64) {
	if len(b.pendingOwn[k]) > 0 || len(b.startDiff[k]) > 0 {
		b.stats.conflicts.Inc()
		return
	}
	b.unregister(k)
	err := b.retry("DeleteService", func(ctx context.Context) error { return b.cl.DeleteService(ctx, k.tenant, k.service) })
	if b.ctx.Err() != nil {
		return
	}
	if err != nil && !errors.Is(err, client.ErrServiceNotFound) {
		b.stats.applyErrs.Inc()
		b.log.Error("remote service deletion not applied", "service", k.String(), "sequence", seq, "err", err)
		return
	}
	delete(b.known, k)
	delete(b.st.Vars, k)
	b.dirty = true
	b.stats.applied.Inc()
	b.log.Info("service deleted by another host", "service", k.String(), "sequence", seq)
}

// ensureService returns the watched service, creating its tenant and the
// service itself when the broker does not have them.
func (b *Bridge) ensureService(k svcKey) (*localSvc, error) {
	if ls := b.svcs[k]; ls != nil {
		return ls, nil
	}
	err := b.retry("CreateService", func(ctx context.Context) error {
		_, err := b.cl.CreateService(ctx, k.tenant, k.service)
		if errors.Is(err, client.ErrTenantNotFound) {
			if err = b.cl.CreateTenant(ctx, k.tenant); err == nil || errors.Is(err, client.ErrAlreadyExists) {
				_, err = b.cl.CreateService(ctx, k.tenant, k.service)
			}
		}
		if errors.Is(err, client.ErrAlreadyExists) {
			err = nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var ls *localSvc
	err = b.retry("register", func(ctx context.Context) error {
		var err error
		ls, err = b.register(ctx, k)
		return err
	})
	return ls, err
}
