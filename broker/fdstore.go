package broker

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/commy/commy/internal/shm"
)

// FDStore keeps descriptors for the broker while it restarts: systemd's file
// descriptor store (FDSTORE=1 in sd_notify(3)). With the memfd backend the
// broker stores every tenant and service in it, since a memfd's memory lives
// only as long as a descriptor or mapping of it.
type FDStore interface {
	// Store keeps a duplicate of f under name; f stays the caller's.
	Store(name string, f *os.File) error
	// Remove drops every descriptor kept under name.
	Remove(name string) error
}

// StoredFD is a descriptor an FDStore handed back, with the name it was
// stored under.
type StoredFD struct {
	Name string
	File *os.File
}

// Names of stored descriptors. A service's name ends in the inode of its
// memfd, so that a restored copy never shares a name with the original.
const (
	fdTenantPrefix  = "commy-tenant/"  // + tenant id: an empty memfd
	fdServicePrefix = "commy-service/" // + tenant/service/inode: the service memfd
)

// IsStoredName reports whether name is one the broker gives the descriptors
// it stores; descriptors passed back under other names are not the broker's.
func IsStoredName(name string) bool {
	return strings.HasPrefix(name, fdTenantPrefix) || strings.HasPrefix(name, fdServicePrefix)
}

// storeTenant keeps an empty memfd for tenant t, so that a tenant without
// services is restored too. Guarded by b.mu.
func (b *Broker) storeTenant(t *tenant) {
	if b.cfg.FDStore == nil || b.cfg.Backend != BackendMemfd {
		return
	}
	name := fdTenantPrefix + t.id
	f, err := markerFD("commy:tenant/" + t.id)
	if err == nil {
		err = b.cfg.FDStore.Store(name, f)
		f.Close()
	}
	if err != nil {
		b.log.Error("fd store: tenant not kept; it will not survive a restart", "tenant", t.id, "err", err)
		return
	}
	t.fdName = name
}

// storeService keeps a read-only descriptor of svc's memfd. Called before
// svc is published, or with svc.mu held.
func (b *Broker) storeService(svc *service) {
	if b.cfg.FDStore == nil || b.cfg.Backend != BackendMemfd {
		return
	}
	err := func() error {
		fi, err := svc.file.Stat()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("no inode for %s", svc.file.Path())
		}
		f, err := svc.file.OpenReadOnly()
		if err != nil {
			return err
		}
		defer f.Close()
		name := fmt.Sprintf("%s%s/%s/%d", fdServicePrefix, svc.tenant, svc.name, st.Ino)
		if err := b.cfg.FDStore.Store(name, f); err != nil {
			return err
		}
		svc.fdName = name
		return nil
	}()
	if err != nil {
		b.log.Error("fd store: service not kept; it will not survive a restart", "service", svc.id, "err", err)
	}
}

// unstore drops what was stored under name, if anything.
func (b *Broker) unstore(name string) {
	if name == "" || b.cfg.FDStore == nil {
		return
	}
	if err := b.cfg.FDStore.Remove(name); err != nil {
		b.log.Error("fd store: not removed; it comes back after a restart", "name", name, "err", err)
	}
}

// restore rebuilds the tenants and services of Config.Restore (memfd
// backend); New closes the descriptors. A service memfd is copied into
// a new one, which is stored before the old is removed, so that a crash at
// any step leaves at least one of them in the store. A descriptor that cannot
// be used is logged and left in the store for a later version to read.
func (b *Broker) restore() {
	fds := b.cfg.Restore
	if len(fds) == 0 {
		return
	}
	if b.cfg.Backend != BackendMemfd {
		b.log.Warn("fd store: descriptors ignored, the backend is not memfd; they stay in the store",
			"backend", b.cfg.Backend, "descriptors", len(fds))
		return
	}
	if b.cfg.FDStore == nil {
		b.log.Warn("fd store: restoring without an FDStore; changes from now on are lost at the next restart, " +
			"which restores the stored originals again")
	}
	tenantOf := func(id string) *tenant {
		t := b.tenants[id]
		if t == nil {
			t = &tenant{id: id, services: map[string]*service{}}
			b.tenants[id] = t
		}
		return t
	}
	for _, fd := range fds {
		switch {
		case strings.HasPrefix(fd.Name, fdTenantPrefix):
			id := strings.TrimPrefix(fd.Name, fdTenantPrefix)
			if err := validTenant(id); err != nil {
				b.log.Error("fd store: tenant skipped", "name", fd.Name, "err", err)
				b.stats.recoverErrors.Add(1)
				continue
			}
			tenantOf(id).fdName = fd.Name
		case strings.HasPrefix(fd.Name, fdServicePrefix):
			b.restoreService(fd, tenantOf)
		default:
			b.log.Warn("fd store: descriptor of unknown name ignored", "name", fd.Name)
		}
	}
	for _, t := range b.tenants {
		if t.fdName == "" {
			b.storeTenant(t)
		}
		for _, svc := range t.services {
			b.watchFile(svc)
		}
		b.log.Info("restored tenant", "tenant", t.id, "services", len(t.services))
	}
}

func (b *Broker) restoreService(fd StoredFD, tenantOf func(string) *tenant) {
	f, err := shm.RestoreMemfd(fd.File)
	if errors.Is(err, shm.ErrServiceDeleted) {
		// The broker died between marking the service deleted and dropping
		// it from the store: finish the deletion.
		b.log.Info("fd store: dropping a deleted service", "name", fd.Name)
		b.unstore(fd.Name)
		return
	}
	var tn, sn string
	if err == nil {
		tn, sn = f.Names()
		if err = validTenant(tn); err == nil {
			err = validName("service", sn)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		b.log.Error("fd store: service skipped", "name", fd.Name, "err", err)
		b.stats.recoverErrors.Add(1)
		return
	}
	t := tenantOf(tn)
	if old := t.services[sn]; old != nil {
		// Left by a crash between storing a restored copy and removing the
		// original: keep the copy that saw more changes.
		drop := fd.Name
		if f.Changes() > old.file.Changes() {
			drop = old.fdName
			delete(t.services, sn)
			delete(b.services, old.id)
			old.file.Close()
		} else {
			f.Close()
		}
		b.log.Warn("fd store: a second copy of a service dropped", "service", serviceID(tn, sn), "dropped", drop)
		b.unstore(drop)
		if t.services[sn] != nil {
			return
		}
	}
	svc := &service{id: serviceID(tn, sn), tenant: tn, name: sn, file: f, subs: map[*session]*subscription{}}
	b.trackService(svc, true)
	b.quarantineOnDamage(svc)
	b.storeService(svc)
	if svc.fdName != "" {
		b.unstore(fd.Name)
	} else {
		svc.fdName = fd.Name // the original stays: it still holds the data
	}
	t.services[sn] = svc
	b.services[svc.id] = svc
}
