package client

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/commy/commy/internal/ipc"
)

// CreateTenant creates a tenant.
func (c *Client) CreateTenant(ctx context.Context, tenant string) error {
	_, err := call[*ipc.Tenant](ctx, c, &ipc.CreateTenant{TenantID: tenant})
	return err
}

// DeleteTenant deletes a tenant and all of its services.
func (c *Client) DeleteTenant(ctx context.Context, tenant string) error {
	_, err := call[*ipc.Deleted](ctx, c, &ipc.DeleteTenant{TenantID: tenant})
	return err
}

// Tenants lists the tenants this client has any right on.
func (c *Client) Tenants(ctx context.Context) ([]string, error) {
	r, err := call[*ipc.Tenants](ctx, c, &ipc.ListTenants{})
	if err != nil {
		return nil, err
	}
	return r.Tenants, nil
}

// Services lists the services of a tenant this client may read.
func (c *Client) Services(ctx context.Context, tenant string) ([]ServiceInfo, error) {
	r, err := call[*ipc.Services](ctx, c, &ipc.ListServices{TenantID: tenant})
	if err != nil {
		return nil, err
	}
	out := make([]ServiceInfo, len(r.Services))
	for i, s := range r.Services {
		out[i] = ServiceInfo{ServiceID: s.ServiceID, ServiceName: s.ServiceName, FileSize: s.FileSize, Variables: s.Variables}
	}
	return out, nil
}

// Service is a handle on one service. It is safe for concurrent use and
// stays valid across reconnections.
type Service struct {
	c        *Client
	ID       string // service_id: "<tenant>_<name>"
	Tenant   string // tenant id
	Name     string // service name
	FilePath string // where the broker keeps the service file
}

func (c *Client) service(r *ipc.Service) *Service {
	return &Service{c: c, ID: r.ServiceID, Tenant: r.TenantID, Name: r.ServiceName, FilePath: r.FilePath}
}

// CreateService creates a service in a tenant.
func (c *Client) CreateService(ctx context.Context, tenant, name string) (*Service, error) {
	r, err := call[*ipc.Service](ctx, c, &ipc.CreateService{TenantID: tenant, ServiceName: name})
	if err != nil {
		return nil, err
	}
	return c.service(r), nil
}

// Service looks up an existing service.
func (c *Client) Service(ctx context.Context, tenant, name string) (*Service, error) {
	r, err := call[*ipc.Service](ctx, c, &ipc.GetService{TenantID: tenant, ServiceName: name})
	if err != nil {
		return nil, err
	}
	return c.service(r), nil
}

// DeleteService deletes a service and its file.
func (c *Client) DeleteService(ctx context.Context, tenant, name string) error {
	_, err := call[*ipc.Deleted](ctx, c, &ipc.DeleteService{TenantID: tenant, ServiceName: name})
	return err
}

// Stats returns the broker's figures (admin only).
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	r, err := call[*ipc.Stats](ctx, c, &ipc.Stats{})
	if err != nil {
		return nil, err
	}
	return statsOf(r), nil
}

// Heartbeat asks the broker for its time.
func (c *Client) Heartbeat(ctx context.Context) (time.Time, error) {
	r, err := call[*ipc.Heartbeat](ctx, c, &ipc.Heartbeat{})
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, r.Timestamp)
}

// Client is the connection the service was found on.
func (s *Service) Client() *Client { return s.c }

// Allocate creates a variable holding data, with room for capacity bytes
// before it must move (0: just enough for data). The broker rounds the
// capacity up to a multiple of 64 bytes, so VariableInfo.Capacity may be
// larger than asked. It returns the version (1).
func (s *Service) Allocate(ctx context.Context, name string, data []byte, capacity int) (uint64, error) {
	if data == nil {
		data = []byte{}
	}
	r, err := call[*ipc.VariableData](ctx, s.c, &ipc.AllocateVariable{ServiceID: s.ID, VariableName: name, InitialData: data, Capacity: uint64(capacity)})
	if err != nil {
		return 0, err
	}
	return r.Version, nil
}

// Read reads a value over the socket.
func (s *Service) Read(ctx context.Context, name string) ([]byte, uint64, error) {
	r, err := call[*ipc.VariableData](ctx, s.c, &ipc.ReadVariable{ServiceID: s.ID, VariableName: name})
	if err != nil {
		return nil, 0, err
	}
	return r.Data, r.Version, nil
}

// Write replaces a value and returns its new version. Subscribers on other
// connections get a notice; this Client's own Subscriptions do not (see
// Subscribe).
func (s *Service) Write(ctx context.Context, name string, data []byte) (uint64, error) {
	if data == nil {
		data = []byte{}
	}
	r, err := call[*ipc.VariableWritten](ctx, s.c, &ipc.WriteVariable{ServiceID: s.ID, VariableName: name, Data: data})
	if err != nil {
		return 0, err
	}
	return r.Version, nil
}

// Deallocate removes a variable.
func (s *Service) Deallocate(ctx context.Context, name string) error {
	_, err := call[*ipc.Deleted](ctx, s.c, &ipc.DeallocateVariable{ServiceID: s.ID, VariableName: name})
	return err
}

// Variables lists the service's variables.
func (s *Service) Variables(ctx context.Context) ([]VariableInfo, error) {
	r, err := call[*ipc.Variables](ctx, s.c, &ipc.ListVariables{ServiceID: s.ID})
	if err != nil {
		return nil, err
	}
	out := make([]VariableInfo, len(r.Variables))
	for i, v := range r.Variables {
		out[i] = VariableInfo{Name: v.Name, Size: v.Size, Capacity: v.Capacity, Version: v.Version}
	}
	return out, nil
}

// Report applies several values at once, all or none
// (ReportVariableChanges). Like Write, it notifies other connections only.
func (s *Service) Report(ctx context.Context, values []NamedValue) error {
	names := make([]string, len(values))
	wire := make([]ipc.NamedValue, len(values))
	for i, v := range values {
		names[i] = v.Name
		wire[i] = ipc.NamedValue{Name: v.Name, Value: v.Value}
		if v.Value == nil {
			wire[i].Value = []byte{} // nil is an empty value here, not a missing one
		}
	}
	_, err := call[*ipc.VariableChangesAcknowledged](ctx, s.c, &ipc.ReportVariableChanges{ServiceID: s.ID, ChangedVariables: names, NewValues: wire})
	return err
}

// FileInfo is the broker's answer to GetServiceFilePath.
type FileInfo struct {
	Path string // file_path
	Size int64  // file_size when it was sent; the file may have grown since
}

// OpenFile asks for the service file and returns the read-only descriptor the
// broker passed with it. When no descriptor came, it opens the path itself.
func (s *Service) OpenFile(ctx context.Context) (FileInfo, *os.File, error) {
	m, file, err := s.c.do(ctx, &ipc.GetServiceFilePath{TenantID: s.Tenant, ServiceName: s.Name})
	if err != nil {
		return FileInfo{}, nil, err
	}
	r, err := as[*ipc.ServiceFilePath](m)
	if err != nil {
		if file != nil {
			file.Close()
		}
		return FileInfo{}, nil, err
	}
	fi := FileInfo{Path: r.FilePath, Size: int64(r.FileSize)}
	if file == nil {
		if file, err = os.Open(r.FilePath); err != nil {
			return fi, nil, fmt.Errorf("client: no descriptor came and the path does not open: %w", err)
		}
	}
	return fi, file, nil
}
