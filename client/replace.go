package client

import (
	"context"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// ReplaceServiceFile makes the broker move a service to a new file (admin
// right). Every Mapping of the old file, in any process, learns it from the
// file and asks for the new one, which re-checks its rights: a reader whose
// map or read right was revoked is refused, and its old mapping never changes
// again. Use it after withdrawing rights (the kernel cannot revoke a mapping).
func (c *Client) ReplaceServiceFile(ctx context.Context, tenant, name string) (*Service, error) {
	r, err := call[*ipc.Service](ctx, c, &ipc.ReplaceServiceFile{TenantID: tenant, ServiceName: name})
	if err != nil {
		return nil, err
	}
	return c.service(r), nil
}

// follow moves m off stale, whose file the broker replaced, by asking for the
// file again (see recheck: a refusal falls back to the socket). It reports
// whether stale is no longer current.
func (m *Mapping) follow(ctx context.Context, stale *shm.Mapping) bool {
	if m.cur.Load() != stale {
		return true
	}
	c := m.svc.c
	c.mu.Lock()
	l := c.link
	c.mu.Unlock()
	if l == nil {
		return false
	}
	if err := m.recheck(ctx, l); err != nil {
		return false
	}
	return m.cur.Load() != stale
}
