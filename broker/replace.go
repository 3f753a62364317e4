package broker

import (
	"os"

	"github.com/commy/commy/internal/ipc"
)

// replaceFile handles ReplaceServiceFile: see replaceService.
func (s *session) replaceFile(m *ipc.ReplaceServiceFile) (ipc.Message, *os.File, error) {
	svc, err := s.named("ReplaceServiceFile", m.TenantID, m.ServiceName, RightAdmin)
	if err != nil {
		return nil, nil, err
	}
	if err := s.b.replaceService(svc); err != nil {
		return nil, nil, err
	}
	svc.mu.RLock()
	reply := svcReply(svc)
	svc.mu.RUnlock()
	s.auditf(Record{Event: EventAdmin, Request: "ReplaceServiceFile", Tenant: svc.tenant, Service: svc.name, ServiceID: svc.id, Path: reply.FilePath})
	return reply, nil, nil
}

// replaceService moves svc to a new file holding a copy of its variables
// (a new memfd, or a new file renamed over the old path) and marks the old
// file replaced, so that every mapped reader asks for the file again, which
// re-checks its rights: the kernel cannot revoke a mapping, but a reader
// whose right was withdrawn is refused the new file, and its old mapping
// never changes again. Changes wait for the service lock, so the copy holds
// every acknowledged write and the next one goes to the new file.
func (b *Broker) replaceService(svc *service) error {
	if err := svc.lock(); err != nil {
		return err
	}
	defer svc.mu.Unlock()
	old := svc.file
	nf, err := old.Replace()
	if err != nil {
		return shmErr(err, svc.id)
	}
	fi, _ := old.Stat()
	path, oldFD := old.Path(), svc.fdName
	svc.file = nf
	svc.fdName = ""
	b.storeService(svc) // the new memfd, before the old one goes
	if svc.fdName == "" {
		svc.fdName = oldFD // not stored (logged): a restart gets the old copy, better than none
	} else {
		b.unstore(oldFD)
	}
	old.MarkReplaced() // mapped readers ask again; waiters wake
	if err := old.Close(); err != nil {
		b.log.Error("replace service: closing the old file", "service", svc.id, "err", err)
	}
	b.unwatchFile(svc, path, fi)
	b.watchFile(svc)
	b.log.Info("service file replaced", "service", svc.id, "path", nf.Path())
	return nil
}
