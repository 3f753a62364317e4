package broker

import (
	"fmt"

	"github.com/commy/commy/internal/ipc"
)

// revoke ends every subscription that p no longer allows: the session gets
// a SubscriptionEnded push with PERMISSION_DENIED instead of any notice
// still waiting for that service, and the audit log a "revoked" record.
// Descriptors passed for mapped reads cannot be taken back (see
// docs/security.md, "Revocation").
func (b *Broker) revoke(p *Policy) {
	b.smu.Lock()
	sessions := make([]*session, 0, len(b.sessions))
	for s := range b.sessions {
		sessions = append(sessions, s)
	}
	b.smu.Unlock()
	for _, s := range sessions {
		s.subMu.Lock()
		var gone []*service
		for _, svc := range s.subs {
			if p.Rights(s.caller, svc.tenant, svc.name)&RightRead == 0 {
				gone = append(gone, svc)
			}
		}
		s.subMu.Unlock()
		for _, svc := range gone {
			if !s.dropSubscription(svc) {
				continue // ended meanwhile
			}
			msg := fmt.Sprintf("subscription ended: a policy reload withdrew read on %s/%s from uid %d", svc.tenant, svc.name, s.caller.UID)
			frame, err := ipc.EncodeFrame(&ipc.SubscriptionEnded{ServiceID: svc.id,
				ErrorCode: ipc.CodeOf(ipc.ErrPermissionDenied), Message: msg})
			if err == nil {
				// Keyed apart from the service's notices, which never merge into it.
				s.out.drop("ended/" + svc.id)
				_, own, err := s.out.push("ended/"+svc.id, frame, nil, nil)
				if err != nil {
					s.overBudget(err)
				}
				if own {
					var sc scratch
					s.deliver(&sc)
				}
			}
			b.log.Info("subscription revoked", "client_id", s.caller.ClientID, "pid", s.caller.PID, "uid", s.caller.UID,
				"service", svc.id)
			s.auditf(Record{Event: EventRevoked, Request: "Subscribe", Right: RightRead.String(), Tenant: svc.tenant,
				Service: svc.name, ServiceID: svc.id, Code: ipc.CodeOf(ipc.ErrPermissionDenied)})
		}
	}
}

// dropSubscription ends the session's subscription to svc and drops the
// notice waiting for it. It reports whether there was one.
func (s *session) dropSubscription(svc *service) bool {
	s.subMu.Lock()
	had := s.subs[svc.id] == svc
	if had {
		delete(s.subs, svc.id)
	}
	s.subMu.Unlock()
	svc.mu.Lock()
	s.b.endSubscription(svc, s)
	svc.mu.Unlock()
	s.out.drop(svc.id)
	return had
}
