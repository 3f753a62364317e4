package broker

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/commy/commy/internal/ipc"
)

// handle serves one request and returns its reply, with a descriptor to pass
// for GetServiceFilePath.
func (s *session) handle(m ipc.Message) (ipc.Message, *os.File, error) {
	if err := s.strictAuditRefuses(m); err != nil {
		return nil, nil, err
	}
	switch m := m.(type) {
	case *ipc.Hello:
		return nil, nil, fmt.Errorf("%w: Hello after the handshake", ipc.ErrProtocol)
	case *ipc.Heartbeat:
		return &ipc.Heartbeat{Timestamp: time.Now().Format(time.RFC3339Nano)}, nil, nil
	case *ipc.Stats:
		if !s.b.policy.Load().GlobalAdmin(s.caller) {
			return nil, nil, s.denied("Stats", RightAdmin, "*", "")
		}
		return s.b.Stats(), nil, nil
	case *ipc.CreateTenant:
		return s.createTenant(m)
	case *ipc.DeleteTenant:
		return s.deleteTenant(m)
	case *ipc.ListTenants:
		return s.listTenants()
	case *ipc.CreateService:
		return s.createService(m)
	case *ipc.GetService:
		return s.getService(m)
	case *ipc.DeleteService:
		return s.deleteService(m)
	case *ipc.ReplaceServiceFile:
		return s.replaceFile(m)
	case *ipc.ListServices:
		return s.listServices(m)
	case *ipc.AllocateVariable:
		return s.allocate(m)
	case *ipc.ReadVariable:
		return s.read(m)
	case *ipc.WriteVariable:
		return s.write(m)
	case *ipc.DeallocateVariable:
		return s.deallocate(m)
	case *ipc.ListVariables:
		return s.listVariables(m)
	case *ipc.GetServiceFilePath:
		return s.filePath(m)
	case *ipc.ReportVariableChanges:
		return s.report(m)
	case *ipc.Subscribe:
		return s.subscribe(m)
	case *ipc.Unsubscribe:
		return s.unsubscribe(m)
	}
	return nil, nil, fmt.Errorf("%w: %s is not a request", ipc.ErrUnknownMessage, m.Kind())
}

// need checks that the caller holds every right in want on a service (or on
// the tenant, for an empty service), auditing a denial.
func (s *session) need(req string, want Right, tenant, service string) error {
	have := s.b.policy.Load().Rights(s.caller, tenant, service)
	if have&want == want {
		return nil
	}
	return s.denied(req, want, tenant, service)
}

func (s *session) denied(req string, want Right, tenant, service string) error {
	have := s.b.policy.Load().Rights(s.caller, tenant, service)
	err := ipc.ErrPermissionDenied
	if want&RightMap != 0 && have&RightRead != 0 && have&RightMap == 0 {
		err = ipc.ErrHybridAccessDenied
	}
	code := ipc.CodeOf(err)
	if s.b.flood.allow(s.caller.UID, s.caller.GID, req, code) {
		s.b.log.Info("request denied", "client_id", s.caller.ClientID, "pid", s.caller.PID, "uid", s.caller.UID,
			"request", req, "right", want.String(), "tenant", tenant, "service", service)
		s.auditf(Record{Event: EventDenied, Request: req, Right: want.String(), Tenant: tenant, Service: service, Code: code})
	} else {
		s.b.stats.suppressed.Add(1)
	}
	where := tenant
	if service != "" {
		where += "/" + service
	}
	return fmt.Errorf("%w: %s needs %s on %s for uid %d", err, req, want, where, s.caller.UID)
}

func (s *session) createTenant(m *ipc.CreateTenant) (ipc.Message, *os.File, error) {
	if err := validTenant(m.TenantID); err != nil {
		return nil, nil, err
	}
	if err := s.need("CreateTenant", RightAdmin, m.TenantID, ""); err != nil {
		return nil, nil, err
	}
	b := s.b
	b.mu.Lock()
	for t := b.tenants[m.TenantID]; t != nil; t = b.tenants[m.TenantID] {
		if t.pending == nil {
			b.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: tenant %s", ipc.ErrAlreadyExists, m.TenantID)
		}
		b.waitLocked(t.pending)
	}
	t := &tenant{id: m.TenantID, services: map[string]*service{}, pending: make(chan struct{})}
	b.tenants[m.TenantID] = t
	b.mu.Unlock()

	var err error
	if b.cfg.Backend == BackendFile {
		if err = os.Mkdir(b.tenantDir(m.TenantID), 0o700); errors.Is(err, os.ErrExist) {
			err = nil // left by a deletion that failed to remove it
		}
	}
	if err == nil {
		b.storeTenant(t)
	}
	b.mu.Lock()
	if err != nil {
		delete(b.tenants, m.TenantID)
	}
	settleLocked(&t.pending)
	b.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ipc.ErrInternal, err)
	}
	s.auditf(Record{Event: EventAdmin, Request: "CreateTenant", Tenant: m.TenantID})
	return &ipc.Tenant{TenantID: m.TenantID}, nil, nil
}

// deleteTenant needs admin on the whole tenant: a tenant-level grant, or
// admin on every one of its services.
func (s *session) deleteTenant(m *ipc.DeleteTenant) (ipc.Message, *os.File, error) {
	if err := validTenant(m.TenantID); err != nil {
		return nil, nil, err
	}
	p := s.b.policy.Load()
	if !p.Any(s.caller, m.TenantID) {
		return nil, nil, s.denied("DeleteTenant", RightAdmin, m.TenantID, "")
	}
	b := s.b
	b.mu.Lock()
	var t *tenant
	for {
		t = b.tenants[m.TenantID]
		if t == nil || t.pending != nil {
			b.mu.Unlock()
			if !p.TenantWide(s.caller, m.TenantID, RightAdmin, nil) {
				return nil, nil, s.denied("DeleteTenant", RightAdmin, m.TenantID, "")
			}
			return nil, nil, fmt.Errorf("%w: %s", ipc.ErrTenantNotFound, m.TenantID)
		}
		var busy chan struct{}
		names := make([]string, 0, len(t.services))
		for name, svc := range t.services {
			if svc.pending != nil {
				busy = svc.pending
			}
			names = append(names, name)
		}
		if busy == nil {
			if !p.TenantWide(s.caller, m.TenantID, RightAdmin, names) {
				b.mu.Unlock()
				return nil, nil, s.denied("DeleteTenant", RightAdmin, m.TenantID, "")
			}
			break
		}
		b.waitLocked(busy)
	}
	t.pending = make(chan struct{})
	for _, svc := range t.services {
		delete(b.services, svc.id)
	}
	b.mu.Unlock()

	var errs []error
	for _, svc := range t.services {
		errs = append(errs, b.dropService(svc))
	}
	if b.cfg.Backend == BackendFile {
		errs = append(errs, os.RemoveAll(b.tenantDir(m.TenantID)))
	}
	b.unstore(t.fdName)
	b.mu.Lock()
	delete(b.tenants, m.TenantID)
	settleLocked(&t.pending)
	b.mu.Unlock()
	b.forgetTenant(m.TenantID)
	s.auditf(Record{Event: EventAdmin, Request: "DeleteTenant", Tenant: m.TenantID})
	if err := errors.Join(errs...); err != nil {
		b.log.Error("delete tenant: files left behind", "tenant", m.TenantID, "err", err)
	}
	return &ipc.Deleted{TenantID: m.TenantID}, nil, nil
}

func (s *session) listTenants() (ipc.Message, *os.File, error) {
	p := s.b.policy.Load()
	s.b.mu.RLock()
	ids := make([]string, 0, len(s.b.tenants))
	for id, t := range s.b.tenants {
		if t.pending == nil {
			ids = append(ids, id)
		}
	}
	s.b.mu.RUnlock()
	slices.Sort(ids)
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if p.Any(s.caller, id) {
			out = append(out, id)
		}
	}
	return &ipc.Tenants{Tenants: out}, nil, nil
}

func (s *session) createService(m *ipc.CreateService) (ipc.Message, *os.File, error) {
	if err := validTenant(m.TenantID); err != nil {
		return nil, nil, err
	}
	if err := validName("service", m.ServiceName); err != nil {
		return nil, nil, err
	}
	if err := s.need("CreateService", RightCreate, m.TenantID, m.ServiceName); err != nil {
		return nil, nil, err
	}
	b := s.b
	id := serviceID(m.TenantID, m.ServiceName)
	b.mu.Lock()
	var t *tenant
	for {
		t = b.tenants[m.TenantID]
		if t == nil || t.pending != nil {
			b.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %s", ipc.ErrTenantNotFound, m.TenantID)
		}
		old := t.services[m.ServiceName]
		if old == nil {
			break
		}
		if old.pending == nil {
			b.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: service %s/%s", ipc.ErrAlreadyExists, m.TenantID, m.ServiceName)
		}
		b.waitLocked(old.pending)
	}
	if err := b.checkCreate(m.TenantID); err != nil {
		b.mu.Unlock()
		return nil, nil, err
	}
	// Absent until it is settled: deleted keeps those who reach it through
	// the tenant out, pending makes a request for the same name wait.
	svc := &service{id: id, tenant: m.TenantID, name: m.ServiceName, deleted: true, subs: map[*session]*subscription{}, pending: make(chan struct{})}
	t.services[svc.name] = svc
	b.mu.Unlock()

	f, err := b.createFile(m.TenantID, m.ServiceName)
	if err == nil {
		svc.file = f
		if err = b.trackService(svc, false); err != nil {
			f.Remove()
		} else {
			b.quarantineOnDamage(svc)
			b.storeService(svc)
			b.watchFile(svc)
		}
	}
	b.mu.Lock()
	if err != nil {
		delete(t.services, svc.name)
	} else {
		svc.mu.Lock()
		svc.deleted = false
		svc.mu.Unlock()
		b.services[svc.id] = svc
	}
	settleLocked(&svc.pending)
	b.mu.Unlock()
	if err != nil {
		return nil, nil, shmErr(err, id)
	}
	s.auditf(Record{Event: EventAdmin, Request: "CreateService", Tenant: m.TenantID, Service: m.ServiceName, ServiceID: svc.id})
	return svcReply(svc), nil, nil
}

func svcReply(svc *service) *ipc.Service {
	return &ipc.Service{ServiceID: svc.id, TenantID: svc.tenant, ServiceName: svc.name, FilePath: svc.file.Path()}
}

func (s *session) getService(m *ipc.GetService) (ipc.Message, *os.File, error) {
	svc, err := s.named("GetService", m.TenantID, m.ServiceName, RightRead)
	if err != nil {
		return nil, nil, err
	}
	return svcReply(svc), nil, nil
}

// named checks the caller's rights on a service named by tenant and name,
// then looks it up: a caller without the right gets PERMISSION_DENIED
// whether or not the service exists.
func (s *session) named(req, tenant, name string, want Right) (*service, error) {
	if err := validTenant(tenant); err != nil {
		return nil, err
	}
	if err := validName("service", name); err != nil {
		return nil, err
	}
	if err := s.need(req, want, tenant, name); err != nil {
		return nil, err
	}
	return s.b.lookupName(tenant, name)
}

func (s *session) deleteService(m *ipc.DeleteService) (ipc.Message, *os.File, error) {
	svc, err := s.named("DeleteService", m.TenantID, m.ServiceName, RightCreate)
	if err != nil {
		return nil, nil, err
	}
	b := s.b
	b.mu.Lock()
	if b.services[svc.id] != svc {
		b.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: %s", ipc.ErrServiceNotFound, svc.id)
	}
	delete(b.services, svc.id)
	svc.pending = make(chan struct{})
	b.mu.Unlock()
	if err := b.dropService(svc); err != nil {
		b.log.Error("delete service: file left behind", "service", svc.id, "err", err)
	}
	b.mu.Lock()
	// The tenant waits for its pending services before it goes.
	delete(b.tenants[svc.tenant].services, svc.name)
	settleLocked(&svc.pending)
	b.mu.Unlock()
	s.auditf(Record{Event: EventAdmin, Request: "DeleteService", Tenant: svc.tenant, Service: svc.name, ServiceID: svc.id})
	return &ipc.Deleted{ServiceID: svc.id}, nil, nil
}

// dropService removes a service that is no longer in the maps: subscribers get
// a last notice with every variable at version 0, and the file goes.
func (b *Broker) dropService(svc *service) error {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.deleted {
		return nil
	}
	vars := svc.file.Variables()
	names := make([]string, len(vars))
	for i, v := range vars {
		names[i] = v.Name
	}
	b.notify(svc, nil, names, make([]uint64, len(names)))
	for sess := range svc.subs {
		sess.subMu.Lock()
		delete(sess.subs, svc.id)
		sess.subMu.Unlock()
		b.endSubscription(svc, sess)
	}
	svc.deleted = true
	b.untrackService(svc)
	svc.file.MarkDeleted() // mapped readers stop and waiters wake
	fi, _ := svc.file.Stat()
	path := svc.file.Path()
	b.unstore(svc.fdName)
	err := svc.file.Remove()
	b.unwatchFile(svc, path, fi)
	return err
}

func (s *session) listServices(m *ipc.ListServices) (ipc.Message, *os.File, error) {
	if err := validTenant(m.TenantID); err != nil {
		return nil, nil, err
	}
	p := s.b.policy.Load()
	if !p.Any(s.caller, m.TenantID) {
		return nil, nil, s.denied("ListServices", RightRead, m.TenantID, "")
	}
	s.b.mu.RLock()
	t := s.b.tenants[m.TenantID]
	if t != nil && t.pending != nil {
		t = nil
	}
	var svcs []*service
	if t != nil {
		for _, name := range slices.Sorted(maps.Keys(t.services)) {
			if svc := t.services[name]; svc.pending == nil {
				svcs = append(svcs, svc)
			}
		}
	}
	s.b.mu.RUnlock()
	if t == nil {
		return nil, nil, fmt.Errorf("%w: %s", ipc.ErrTenantNotFound, m.TenantID)
	}
	out := &ipc.Services{TenantID: m.TenantID, Services: []ipc.ServiceInfo{}}
	for _, svc := range svcs {
		if p.Rights(s.caller, svc.tenant, svc.name)&RightRead == 0 {
			continue
		}
		svc.mu.RLock()
		if !svc.deleted {
			out.Services = append(out.Services, ipc.ServiceInfo{
				ServiceID: svc.id, ServiceName: svc.name, FileSize: uint64(svc.file.Size()), Variables: uint64(svc.file.Len()),
			})
		}
		svc.mu.RUnlock()
	}
	return out, nil, nil
}

// service checks the caller's rights on a service named by id, then looks
// it up: a caller without the right gets PERMISSION_DENIED whether or not the
// service exists.
func (s *session) service(req, id string, want Right) (*service, error) {
	tenant, name, err := splitServiceID(id)
	if err != nil {
		return nil, err
	}
	if err := s.need(req, want, tenant, name); err != nil {
		return nil, err
	}
	return s.b.lookup(id)
}

// variable checks a variable name and looks its service up for a request
// that needs want on it.
func (s *session) variable(req, id, name string, want Right) (*service, error) {
	svc, err := s.service(req, id, want)
	if err != nil {
		return nil, err
	}
	if err := validName("variable", name); err != nil {
		return nil, err
	}
	return svc, nil
}

func (s *session) allocate(m *ipc.AllocateVariable) (ipc.Message, *os.File, error) {
	svc, err := s.variable("AllocateVariable", m.ServiceID, m.VariableName, RightCreate)
	if err != nil {
		return nil, nil, err
	}
	if m.Capacity > uint64(s.b.cfg.MaxFrame) || uint64(len(m.InitialData)) > uint64(s.b.cfg.MaxFrame) {
		return nil, nil, fmt.Errorf("%w: capacity %d passes the %d-byte frame limit", ipc.ErrValueTooLarge, m.Capacity, s.b.cfg.MaxFrame)
	}
	if err := svc.lock(); err != nil {
		return nil, nil, err
	}
	if err := s.b.charge(svc.tenant, limitVariables, 1, false); err != nil {
		svc.mu.Unlock()
		return nil, nil, err
	}
	v, err := svc.file.Allocate(m.VariableName, m.InitialData, int(m.Capacity))
	if err == nil {
		s.changed(svc)
		s.b.notify(svc, s, []string{m.VariableName}, []uint64{v})
	} else {
		s.b.discharge(svc.tenant, limitVariables, 1)
	}
	svc.mu.Unlock()
	if err != nil {
		return nil, nil, shmErr(err, svc.id+"/"+m.VariableName)
	}
	s.auditf(Record{Event: EventAdmin, Request: "AllocateVariable", ServiceID: svc.id, Variables: []string{m.VariableName}, Bytes: len(m.InitialData)})
	data := m.InitialData
	if data == nil {
		data = []byte{}
	}
	return &ipc.VariableData{ServiceID: svc.id, VariableName: m.VariableName, Data: data, Version: v}, nil, nil
}

func (s *session) read(m *ipc.ReadVariable) (ipc.Message, *os.File, error) {
	svc, err := s.variable("ReadVariable", m.ServiceID, m.VariableName, RightRead)
	if err != nil {
		return nil, nil, err
	}
	if err := svc.rlock(); err != nil {
		return nil, nil, err
	}
	data, v, err := svc.file.Read(m.VariableName, s.readBuf[:0])
	svc.mu.RUnlock()
	if err != nil {
		return nil, nil, shmErr(err, svc.id+"/"+m.VariableName)
	}
	if cap(data) <= 1<<20 {
		s.readBuf = data // reused: the reply is encoded before the next request
	}
	return &ipc.VariableData{ServiceID: svc.id, VariableName: m.VariableName, Data: data, Version: v}, nil, nil
}

func (s *session) write(m *ipc.WriteVariable) (ipc.Message, *os.File, error) {
	svc, err := s.variable("WriteVariable", m.ServiceID, m.VariableName, RightWrite)
	if err != nil {
		return nil, nil, err
	}
	if m.Data == nil {
		return nil, nil, fmt.Errorf("%w: WriteVariable without data", ipc.ErrInvalidRequest)
	}
	if err := svc.lock(); err != nil {
		return nil, nil, err
	}
	v, err := svc.file.Write(m.VariableName, m.Data)
	if err == nil {
		s.changed(svc)
		s.b.notify(svc, s, []string{m.VariableName}, []uint64{v})
	}
	svc.mu.Unlock()
	if err != nil {
		return nil, nil, shmErr(err, svc.id+"/"+m.VariableName)
	}
	s.auditf(Record{Event: EventWrite, ServiceID: svc.id, Variables: []string{m.VariableName}, Bytes: len(m.Data)})
	return &ipc.VariableWritten{ServiceID: svc.id, VariableName: m.VariableName, Version: v}, nil, nil
}

func (s *session) deallocate(m *ipc.DeallocateVariable) (ipc.Message, *os.File, error) {
	svc, err := s.variable("DeallocateVariable", m.ServiceID, m.VariableName, RightCreate)
	if err != nil {
		return nil, nil, err
	}
	if err := svc.lock(); err != nil {
		return nil, nil, err
	}
	err = svc.file.Deallocate(m.VariableName)
	if err == nil {
		s.b.discharge(svc.tenant, limitVariables, 1)
		s.changed(svc)
		s.b.notify(svc, s, []string{m.VariableName}, []uint64{0})
	}
	svc.mu.Unlock()
	if err != nil {
		return nil, nil, shmErr(err, svc.id+"/"+m.VariableName)
	}
	s.auditf(Record{Event: EventAdmin, Request: "DeallocateVariable", ServiceID: svc.id, Variables: []string{m.VariableName}})
	return &ipc.Deleted{ServiceID: svc.id, VariableName: m.VariableName}, nil, nil
}

func (s *session) listVariables(m *ipc.ListVariables) (ipc.Message, *os.File, error) {
	svc, err := s.service("ListVariables", m.ServiceID, RightRead)
	if err != nil {
		return nil, nil, err
	}
	if err := svc.rlock(); err != nil {
		return nil, nil, err
	}
	vars := svc.file.Variables()
	svc.mu.RUnlock()
	out := &ipc.Variables{ServiceID: svc.id, Variables: make([]ipc.VariableInfo, len(vars))}
	for i, v := range vars {
		out.Variables[i] = ipc.VariableInfo{Name: v.Name, Size: v.Size, Capacity: v.Capacity, Version: v.Version}
	}
	return out, nil, nil
}

func (s *session) filePath(m *ipc.GetServiceFilePath) (ipc.Message, *os.File, error) {
	svc, err := s.named("GetServiceFilePath", m.TenantID, m.ServiceName, RightRead|RightMap)
	if err != nil {
		return nil, nil, err
	}
	if err := svc.rlock(); err != nil {
		return nil, nil, err
	}
	defer svc.mu.RUnlock()
	path := svc.file.Path()
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ipc.ErrFileNotFound, svc.id, err)
	}
	fd, err := svc.file.OpenReadOnly()
	if errors.Is(err, syscallEMFILE) || errors.Is(err, syscallENFILE) {
		s.b.stats.fdRefused.Add(1)
		return nil, nil, fmt.Errorf("%w: %s: the broker is out of descriptors: %w", ipc.ErrQuotaExceeded, limitDescriptors, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ipc.ErrFileNotFound, err)
	}
	s.auditf(Record{Event: EventFilePath, ServiceID: svc.id, Tenant: svc.tenant, Service: svc.name, Path: path})
	return &ipc.ServiceFilePath{ServiceID: svc.id, FilePath: path, FileSize: uint64(svc.file.Size())}, fd, nil
}

func (s *session) report(m *ipc.ReportVariableChanges) (ipc.Message, *os.File, error) {
	svc, err := s.service("ReportVariableChanges", m.ServiceID, RightWrite)
	if err != nil {
		return nil, nil, err
	}
	if len(m.NewValues) == 0 {
		return nil, nil, fmt.Errorf("%w: no new_values", ipc.ErrInvalidRequest)
	}
	if len(m.ChangedVariables) != len(m.NewValues) {
		return nil, nil, fmt.Errorf("%w: %d changed_variables but %d new_values", ipc.ErrInvalidRequest, len(m.ChangedVariables), len(m.NewValues))
	}
	names := make([]string, len(m.NewValues))
	values := make([][]byte, len(m.NewValues))
	bytes := 0
	seen := make(map[string]bool, len(m.NewValues))
	for i, nv := range m.NewValues {
		if err := validName("variable", nv.Name); err != nil {
			return nil, nil, err
		}
		if seen[nv.Name] {
			return nil, nil, fmt.Errorf("%w: %q has two new values", ipc.ErrInvalidRequest, nv.Name)
		}
		seen[nv.Name] = true
		if nv.Value == nil {
			return nil, nil, fmt.Errorf("%w: no value for %q", ipc.ErrInvalidRequest, nv.Name)
		}
		names[i], values[i] = nv.Name, nv.Value
		bytes += len(nv.Value)
	}
	listed := make(map[string]bool, len(m.ChangedVariables))
	for _, n := range m.ChangedVariables {
		listed[n] = true
	}
	for _, n := range names {
		if !listed[n] {
			return nil, nil, fmt.Errorf("%w: %q has a new value but is not in changed_variables", ipc.ErrInvalidRequest, n)
		}
	}
	if err := svc.lock(); err != nil {
		return nil, nil, err
	}
	for _, n := range names {
		if !svc.file.Has(n) {
			svc.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %s/%s (nothing applied)", ipc.ErrVariableNotFound, svc.id, n)
		}
	}
	vers, err := svc.file.WriteBatch(names, values, s.vers[:0])
	if err == nil {
		s.changed(svc)
		s.b.notify(svc, s, names, append([]uint64(nil), vers...))
	}
	svc.mu.Unlock()
	if err != nil {
		return nil, nil, shmErr(err, svc.id)
	}
	s.vers = vers
	s.auditf(Record{Event: EventReport, ServiceID: svc.id, Variables: names, Bytes: bytes})
	return &ipc.VariableChangesAcknowledged{ServiceID: svc.id, ChangedVariables: m.ChangedVariables}, nil, nil
}

func (s *session) subscribe(m *ipc.Subscribe) (ipc.Message, *os.File, error) {
	svc, err := s.service("Subscribe", m.ServiceID, RightRead)
	if err != nil {
		return nil, nil, err
	}
	if max := s.b.maxFilterNames(); len(m.Variables) > max {
		return nil, nil, fmt.Errorf("%w: %s: %d variable names in the filter, limit %d (the variables a service holds)",
			ipc.ErrQuotaExceeded, limitFilterNames, len(m.Variables), max)
	}
	sub := &subscription{}
	if len(m.Variables) > 0 {
		sub.filter = make(map[string]bool, len(m.Variables))
		for _, n := range m.Variables {
			if err := validName("variable", n); err != nil {
				return nil, nil, err
			}
			sub.filter[n] = true
		}
	}
	// Charged while it is in svc.subs, given back when it leaves.
	if err := s.user.subscribe(len(sub.filter)); err != nil {
		return nil, nil, err
	}
	s.subMu.Lock()
	_, again := s.subs[svc.id]
	if !again && len(s.subs) >= s.b.cfg.MaxSubscriptions {
		s.subMu.Unlock()
		s.user.unsubscribe(len(sub.filter))
		return nil, nil, fmt.Errorf("%w: %d subscriptions on this connection", ipc.ErrNoSpace, len(s.subs))
	}
	s.subs[svc.id] = svc
	s.subMu.Unlock()
	if err := svc.lock(); err != nil {
		s.subMu.Lock()
		delete(s.subs, svc.id)
		s.subMu.Unlock()
		s.user.unsubscribe(len(sub.filter))
		return nil, nil, err
	}
	if old := svc.subs[s]; old != nil {
		s.user.unsubscribe(len(old.filter))
	}
	svc.subs[s] = sub
	svc.mu.Unlock()
	// A reload that came after the check above and scanned the session
	// before the subscription was in place has not seen it: check again.
	if s.b.policy.Load().Rights(s.caller, svc.tenant, svc.name)&RightRead == 0 {
		s.dropSubscription(svc)
		return nil, nil, s.denied("Subscribe", RightRead, svc.tenant, svc.name)
	}
	return &ipc.Subscribed{ServiceID: svc.id}, nil, nil
}

func (s *session) unsubscribe(m *ipc.Unsubscribe) (ipc.Message, *os.File, error) {
	if err := validServiceID(m.ServiceID); err != nil {
		return nil, nil, err
	}
	s.subMu.Lock()
	svc := s.subs[m.ServiceID]
	delete(s.subs, m.ServiceID)
	s.subMu.Unlock()
	if svc == nil {
		if _, err := s.service("Unsubscribe", m.ServiceID, RightRead); err != nil {
			return nil, nil, err
		}
	} else {
		svc.mu.Lock()
		s.b.endSubscription(svc, s)
		svc.mu.Unlock()
	}
	s.out.drop(m.ServiceID)
	return &ipc.Unsubscribed{ServiceID: m.ServiceID}, nil, nil
}
