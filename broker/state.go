package broker

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// tenant holds services by name. Guarded by Broker.mu.
//
// A tenant or service that is being created or deleted stays in its map
// with pending set, and counts as absent: a request for the same name waits
// for pending to close, so that creation and deletion of one name are
// linearizable while the file work runs without Broker.mu.
type tenant struct {
	id       string
	services map[string]*service
	fdName   string        // in Config.FDStore, or ""
	pending  chan struct{} // non-nil while being created or deleted
}

// service is one service and its file. mu guards the file: readers of the
// file take it for reading, changes take it for writing. subs is guarded by
// mu as well, so notices are queued in the order changes were applied.
type service struct {
	id, tenant, name string

	mu      sync.RWMutex
	file    *shm.File
	fdName  string // in Config.FDStore, or ""
	deleted bool   // also set while being created
	subs    map[*session]*subscription

	pending chan struct{} // guarded by Broker.mu; see tenant

	sc scratch // notify's, under mu
}

// settleLocked ends a pending state: whoever waits for it tries again.
func settleLocked(pending *chan struct{}) {
	close(*pending)
	*pending = nil
}

// waitLocked drops b.mu until pending closes, then takes it again.
func (b *Broker) waitLocked(pending chan struct{}) {
	b.mu.Unlock()
	<-pending
	b.mu.Lock()
}

// lock takes the service's lock for a change, failing if it was deleted or
// quarantined.
func (svc *service) lock() error {
	svc.mu.Lock()
	if err := svc.usableLocked(); err != nil {
		svc.mu.Unlock()
		return err
	}
	return nil
}

// rlock takes the service's lock for reading, failing if it was deleted or
// quarantined.
func (svc *service) rlock() error {
	svc.mu.RLock()
	if err := svc.usableLocked(); err != nil {
		svc.mu.RUnlock()
		return err
	}
	return nil
}

func (svc *service) usableLocked() error {
	switch {
	case svc.deleted:
		return fmt.Errorf("%w: %s", ipc.ErrServiceNotFound, svc.id)
	case svc.file.Damaged() != nil:
		return fmt.Errorf("%w: %s: %w", ipc.ErrServiceDamaged, svc.id, svc.file.Damaged())
	}
	return nil
}

// quarantineOnDamage makes the first corruption found in svc's file at run
// time quarantine the service (lock and rlock then fail with
// SERVICE_DAMAGED), logged and counted once. Other services carry on.
func (b *Broker) quarantineOnDamage(svc *service) {
	svc.file.OnDamage(func(err error) {
		b.log.Error("service file damaged: service quarantined", "service", svc.id, "path", svc.file.Path(), "err", err)
		b.stats.damaged.Add(1)
	})
}

const memSuffix = ".mem"

// tenantsDir holds a directory per tenant (file backend), apart from the
// broker's own files such as the audit log.
const tenantsDir = "tenants"

// tenantDir is where the services of a tenant of the file backend live.
func (b *Broker) tenantDir(tenant string) string {
	return filepath.Join(b.cfg.DataDir, tenantsDir, tenant)
}

// storeFile is where a service of the file backend lives.
func (b *Broker) storeFile(tenant, service string) string {
	return filepath.Join(b.tenantDir(tenant), service+memSuffix)
}

// createFile makes the shared-memory file of a new service.
func (b *Broker) createFile(tenant, service string) (*shm.File, error) {
	if b.cfg.Backend == BackendMemfd {
		return shm.CreateMemfd(tenant, service, b.cfg.Service)
	}
	if err := os.Mkdir(b.tenantDir(tenant), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w: %w", ipc.ErrInternal, err)
	}
	return shm.Create(b.storeFile(tenant, service), tenant, service, b.cfg.Service)
}

// recover loads every tenant and service of the file backend from the data
// directory, or of the memfd backend from Config.Restore. A file that cannot
// be used is logged and left where it is.
func (b *Broker) recover() error {
	b.restore()
	if b.cfg.Backend != BackendFile {
		return nil
	}
	ents, err := os.ReadDir(filepath.Join(b.cfg.DataDir, tenantsDir))
	if err != nil {
		return fmt.Errorf("broker: recover: %w", err)
	}
	for _, te := range ents {
		if !te.IsDir() || validTenant(te.Name()) != nil {
			continue
		}
		t := &tenant{id: te.Name(), services: map[string]*service{}}
		b.tenants[t.id] = t
		files, err := os.ReadDir(b.tenantDir(t.id))
		if err != nil {
			b.log.Error("recover: cannot read tenant directory", "tenant", t.id, "err", err)
			continue
		}
		for _, fe := range files {
			name, ok := strings.CutSuffix(fe.Name(), memSuffix)
			if !ok || fe.IsDir() || validName("service", name) != nil {
				continue
			}
			path := b.storeFile(t.id, name)
			f, err := shm.Open(path)
			if errors.Is(err, shm.ErrServiceDeleted) {
				// The broker died between marking the service deleted and
				// removing its file: finish the deletion.
				b.log.Info("recover: removing the file of a deleted service", "path", path)
				if err := os.Remove(path); err != nil {
					b.log.Error("recover: cannot remove the file of a deleted service", "path", path, "err", err)
					b.stats.recoverErrors.Add(1)
				}
				continue
			}
			if err != nil {
				b.log.Error("recover: service file skipped", "path", path, "err", err)
				b.stats.recoverErrors.Add(1)
				continue
			}
			if tn, sn := f.Names(); tn != t.id || sn != name {
				b.log.Error("recover: service file names another service; skipped", "path", path, "tenant", tn, "service", sn)
				b.stats.recoverErrors.Add(1)
				f.Close()
				continue
			}
			s := &service{id: serviceID(t.id, name), tenant: t.id, name: name, file: f, subs: map[*session]*subscription{}}
			b.trackService(s, true)
			t.services[name] = s
			b.services[s.id] = s
			b.quarantineOnDamage(s)
			b.watchFile(s)
		}
		b.log.Info("recovered tenant", "tenant", t.id, "services", len(t.services))
	}
	return nil
}

// lookup finds a service by id.
func (b *Broker) lookup(id string) (*service, error) {
	if err := validServiceID(id); err != nil {
		return nil, err
	}
	b.mu.RLock()
	s := b.services[id]
	b.mu.RUnlock()
	if s == nil {
		return nil, fmt.Errorf("%w: %s", ipc.ErrServiceNotFound, id)
	}
	return s, nil
}

// lookupName finds a service by tenant and name.
func (b *Broker) lookupName(tenantID, name string) (*service, error) {
	if err := validTenant(tenantID); err != nil {
		return nil, err
	}
	if err := validName("service", name); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	t := b.tenants[tenantID]
	if t == nil || t.pending != nil {
		return nil, fmt.Errorf("%w: %s", ipc.ErrTenantNotFound, tenantID)
	}
	s := t.services[name]
	if s == nil || s.pending != nil {
		return nil, fmt.Errorf("%w: %s/%s", ipc.ErrServiceNotFound, tenantID, name)
	}
	return s, nil
}

// shmErr turns a service file error about what (service/variable) into its
// wire error.
func shmErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipc.ErrQuotaExceeded):
		return err
	case errors.Is(err, shm.ErrNotFound):
		return fmt.Errorf("%w: %s", ipc.ErrVariableNotFound, what)
	case errors.Is(err, shm.ErrExists):
		return fmt.Errorf("%w: variable %s", ipc.ErrAlreadyExists, what)
	case errors.Is(err, shm.ErrNoSpace):
		return fmt.Errorf("%w: %w", ipc.ErrNoSpace, err)
	case errors.Is(err, shm.ErrTooLarge):
		return fmt.Errorf("%w: %w", ipc.ErrValueTooLarge, err)
	case errors.Is(err, shm.ErrInvalidName):
		return fmt.Errorf("%w: %w", ipc.ErrInvalidName, err)
	case errors.Is(err, shm.ErrClosed):
		return fmt.Errorf("%w: service deleted", ipc.ErrServiceNotFound)
	case errors.Is(err, shm.ErrCorrupt):
		return fmt.Errorf("%w: %w", ipc.ErrServiceDamaged, err)
	}
	return fmt.Errorf("%w: %w", ipc.ErrInternal, err)
}

// tenantUsage is what one tenant holds.
type tenantUsage struct {
	tenant              string
	services, variables int
	fileBytes           int64 // sizes of the service files
}

// usage returns what each tenant holds, sorted by tenant id.
func (b *Broker) usage() []tenantUsage {
	type svcOf struct {
		i   int
		svc *service
	}
	b.mu.RLock()
	ids := slices.Sorted(maps.Keys(b.tenants))
	out := make([]tenantUsage, len(ids))
	all := make([]svcOf, 0, len(b.services))
	for i, id := range ids {
		out[i].tenant = id
		for _, s := range b.tenants[id].services {
			all = append(all, svcOf{i, s})
		}
	}
	b.mu.RUnlock()
	for _, s := range all {
		s.svc.mu.RLock()
		if !s.svc.deleted {
			u := &out[s.i]
			u.services++
			u.variables += s.svc.file.Len()
			u.fileBytes += s.svc.file.Size()
		}
		s.svc.mu.RUnlock()
	}
	return out
}
