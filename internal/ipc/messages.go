package ipc

// ProtocolVersion is the version a client names in Hello.
const ProtocolVersion = 1

// Header is the part of every message that routes it: its variant name and
// the request id (0 for pushes from the broker).
type Header struct {
	Type string `cbor:"type"`
	ID   uint64 `cbor:"id"`
}

// Hdr returns the header, so every message embedding it is a Message.
func (h *Header) Hdr() *Header { return h }

// Message is any message of the protocol.
type Message interface {
	// Kind is the message's "type".
	Kind() string
	Hdr() *Header
}

// Hello opens a connection.
type Hello struct {
	Header
	Protocol   uint64 `cbor:"protocol"`
	ClientName string `cbor:"client_name,omitempty"`
}

// Welcome answers Hello with what the kernel says about the client.
type Welcome struct {
	Header
	Protocol      uint64 `cbor:"protocol"`
	ServerVersion string `cbor:"server_version"`
	ClientID      uint64 `cbor:"client_id"`
	PID           int64  `cbor:"pid"`
	UID           uint64 `cbor:"uid"`
	GID           uint64 `cbor:"gid"`
	MaxFrame      uint64 `cbor:"max_frame"`
}

// CreateTenant asks for a new tenant; the reply is Tenant.
type CreateTenant struct {
	Header
	TenantID string `cbor:"tenant_id"`
}

// Tenant names a tenant that exists.
type Tenant struct {
	Header
	TenantID string `cbor:"tenant_id"`
}

// DeleteTenant deletes a tenant with its services; the reply is Deleted.
type DeleteTenant struct {
	Header
	TenantID string `cbor:"tenant_id"`
}

// Deleted confirms DeleteTenant (tenant_id), DeleteService (service_id) or
// DeallocateVariable (service_id, variable_name).
type Deleted struct {
	Header
	TenantID     string `cbor:"tenant_id,omitempty"`
	ServiceID    string `cbor:"service_id,omitempty"`
	VariableName string `cbor:"variable_name,omitempty"`
}

// ListTenants asks for the tenants the caller has any right on.
type ListTenants struct{ Header }

// Tenants lists tenant ids, sorted.
type Tenants struct {
	Header
	Tenants []string `cbor:"tenants"`
}

// CreateService asks for a new service; the reply is Service.
type CreateService struct {
	Header
	TenantID    string `cbor:"tenant_id"`
	ServiceName string `cbor:"service_name"`
}

// GetService looks a service up; the reply is Service.
type GetService struct {
	Header
	TenantID    string `cbor:"tenant_id"`
	ServiceName string `cbor:"service_name"`
}

// Service describes a service.
type Service struct {
	Header
	ServiceID   string `cbor:"service_id"`
	TenantID    string `cbor:"tenant_id"`
	ServiceName string `cbor:"service_name"`
	FilePath    string `cbor:"file_path"`
}

// DeleteService deletes a service and its file; the reply is Deleted.
type DeleteService struct {
	Header
	TenantID    string `cbor:"tenant_id"`
	ServiceName string `cbor:"service_name"`
}

// ReplaceServiceFile makes the broker move a service to a new file and mark
// the old one replaced, so that mapped readers ask for the file again (and
// those whose right was revoked are refused); the reply is Service.
type ReplaceServiceFile struct {
	Header
	TenantID    string `cbor:"tenant_id"`
	ServiceName string `cbor:"service_name"`
}

// ListServices asks for a tenant's services; the reply is Services.
type ListServices struct {
	Header
	TenantID string `cbor:"tenant_id"`
}

// ServiceInfo is one entry of Services.
type ServiceInfo struct {
	ServiceID   string `cbor:"service_id"`
	ServiceName string `cbor:"service_name"`
	FileSize    uint64 `cbor:"file_size"`
	Variables   uint64 `cbor:"variables"`
}

// Services lists a tenant's services, sorted by name.
type Services struct {
	Header
	TenantID string        `cbor:"tenant_id"`
	Services []ServiceInfo `cbor:"services"`
}

// AllocateVariable creates a variable; the reply is VariableData.
type AllocateVariable struct {
	Header
	ServiceID    string `cbor:"service_id"`
	VariableName string `cbor:"variable_name"`
	InitialData  []byte `cbor:"initial_data"`
	Capacity     uint64 `cbor:"capacity,omitempty"`
}

// ReadVariable asks for a value; the reply is VariableData.
type ReadVariable struct {
	Header
	ServiceID    string `cbor:"service_id"`
	VariableName string `cbor:"variable_name"`
}

// VariableData carries a value and its version.
type VariableData struct {
	Header
	ServiceID    string `cbor:"service_id"`
	VariableName string `cbor:"variable_name"`
	Data         []byte `cbor:"data"`
	Version      uint64 `cbor:"version"`
}

// WriteVariable replaces a value; the reply is VariableWritten.
type WriteVariable struct {
	Header
	ServiceID    string `cbor:"service_id"`
	VariableName string `cbor:"variable_name"`
	Data         []byte `cbor:"data"`
}

// VariableWritten confirms a write with the new version.
type VariableWritten struct {
	Header
	ServiceID    string `cbor:"service_id"`
	VariableName string `cbor:"variable_name"`
	Version      uint64 `cbor:"version"`
}

// DeallocateVariable removes a variable; the reply is Deleted.
type DeallocateVariable struct {
	Header
	ServiceID    string `cbor:"service_id"`
	VariableName string `cbor:"variable_name"`
}

// ListVariables asks for a service's variables; the reply is Variables.
type ListVariables struct {
	Header
	ServiceID string `cbor:"service_id"`
}

// VariableInfo is one entry of Variables.
type VariableInfo struct {
	Name     string `cbor:"name"`
	Size     uint64 `cbor:"size"`
	Capacity uint64 `cbor:"capacity"`
	Version  uint64 `cbor:"version"`
}

// Variables lists a service's variables, sorted by name.
type Variables struct {
	Header
	ServiceID string         `cbor:"service_id"`
	Variables []VariableInfo `cbor:"variables"`
}

// GetServiceFilePath asks for the service file; the reply is ServiceFilePath
// with one read-only descriptor of the file attached.
type GetServiceFilePath struct {
	Header
	TenantID    string `cbor:"tenant_id"`
	ServiceName string `cbor:"service_name"`
}

// ServiceFilePath names the service file; a descriptor travels with it.
type ServiceFilePath struct {
	Header
	ServiceID string `cbor:"service_id"`
	FilePath  string `cbor:"file_path"`
	FileSize  uint64 `cbor:"file_size"`
}

// NamedValue is one [name, bytes] pair of ReportVariableChanges.new_values.
type NamedValue struct {
	_     struct{} `cbor:",toarray"`
	Name  string
	Value []byte
}

// ReportVariableChanges applies several values at once, all or none; the
// reply is VariableChangesAcknowledged.
type ReportVariableChanges struct {
	Header
	ServiceID        string       `cbor:"service_id"`
	ChangedVariables []string     `cbor:"changed_variables"`
	NewValues        []NamedValue `cbor:"new_values"`
}

// VariableChangesAcknowledged confirms ReportVariableChanges.
type VariableChangesAcknowledged struct {
	Header
	ServiceID        string   `cbor:"service_id"`
	ChangedVariables []string `cbor:"changed_variables"`
}

// Subscribe asks for VariablesUpdated pushes for a service, optionally only
// for some variables; the reply is Subscribed.
type Subscribe struct {
	Header
	ServiceID string   `cbor:"service_id"`
	Variables []string `cbor:"variables,omitempty"`
}

// Subscribed confirms Subscribe.
type Subscribed struct {
	Header
	ServiceID string `cbor:"service_id"`
}

// Unsubscribe ends a subscription; the reply is Unsubscribed.
type Unsubscribe struct {
	Header
	ServiceID string `cbor:"service_id"`
}

// Unsubscribed confirms Unsubscribe.
type Unsubscribed struct {
	Header
	ServiceID string `cbor:"service_id"`
}

// VariablesUpdated is pushed (id 0) to subscribers when variables change:
// Versions[i] is the version of Variables[i].
type VariablesUpdated struct {
	Header
	ServiceID string   `cbor:"service_id"`
	Variables []string `cbor:"variables"`
	Versions  []uint64 `cbor:"versions"`
}

// SubscriptionEnded is pushed (id 0) when the broker ends a subscription on
// its own, such as when a policy reload withdrew the right to read the
// service: ErrorCode says why (PERMISSION_DENIED).
type SubscriptionEnded struct {
	Header
	ServiceID string `cbor:"service_id"`
	ErrorCode string `cbor:"error_code"`
	Message   string `cbor:"message"`
}

// Heartbeat is both the request (no fields) and the reply (timestamp, RFC 3339).
type Heartbeat struct {
	Header
	Timestamp string `cbor:"timestamp,omitempty"`
}

// Stats is both the request (no fields, admin only) and the reply.
type Stats struct {
	Header
	ServerVersion    string            `cbor:"server_version,omitempty"`
	UptimeSeconds    float64           `cbor:"uptime_seconds,omitempty"`
	Connections      uint64            `cbor:"connections,omitempty"`
	ConnectionsTotal uint64            `cbor:"connections_total,omitempty"`
	Tenants          uint64            `cbor:"tenants,omitempty"`
	Services         uint64            `cbor:"services,omitempty"`
	Variables        uint64            `cbor:"variables,omitempty"`
	Requests         map[string]uint64 `cbor:"requests,omitempty"`
	Errors           map[string]uint64 `cbor:"errors,omitempty"`
	NoticesSent      uint64            `cbor:"notices_sent,omitempty"`
	NoticesMerged    uint64            `cbor:"notices_merged,omitempty"`
	AuditErrors      uint64            `cbor:"audit_errors,omitempty"`
	Probe            string            `cbor:"probe,omitempty"`
	ProbeEvents      uint64            `cbor:"probe_events,omitempty"`
	ProbeLost        uint64            `cbor:"probe_lost,omitempty"`

	ConnectionsRejected uint64                       `cbor:"connections_rejected,omitempty"`
	ServiceFileBytes    uint64                       `cbor:"service_file_bytes,omitempty"`
	RequestErrors       map[string]map[string]uint64 `cbor:"request_errors,omitempty"` // by type, then error code
	BytesIn             uint64                       `cbor:"bytes_in,omitempty"`
	BytesOut            uint64                       `cbor:"bytes_out,omitempty"`
	AuditEvents         map[string]uint64            `cbor:"audit_events,omitempty"`
	PolicyReloads       uint64                       `cbor:"policy_reloads,omitempty"`
	PolicyReloadErrors  uint64                       `cbor:"policy_reload_errors,omitempty"`
	Limits              []LimitUsage                 `cbor:"limits,omitempty"`
}

// LimitUsage is one resource's use against its limit, in Stats.
type LimitUsage struct {
	Scope   string `cbor:"scope"`        // "broker", "uid" or "tenant"
	ID      string `cbor:"id,omitempty"` // the uid or tenant id
	Limit   string `cbor:"limit"`        // as QUOTA_EXCEEDED names it
	Used    int64  `cbor:"used"`
	Max     int64  `cbor:"max"` // -1: no limit
	Refused uint64 `cbor:"refused,omitempty"`
}

// Error answers a request that failed.
type Error struct {
	Header
	ErrorCode string `cbor:"error_code"`
	Message   string `cbor:"message"`
}

func (*Hello) Kind() string                       { return "Hello" }
func (*Welcome) Kind() string                     { return "Welcome" }
func (*CreateTenant) Kind() string                { return "CreateTenant" }
func (*Tenant) Kind() string                      { return "Tenant" }
func (*DeleteTenant) Kind() string                { return "DeleteTenant" }
func (*Deleted) Kind() string                     { return "Deleted" }
func (*ListTenants) Kind() string                 { return "ListTenants" }
func (*Tenants) Kind() string                     { return "Tenants" }
func (*CreateService) Kind() string               { return "CreateService" }
func (*GetService) Kind() string                  { return "GetService" }
func (*Service) Kind() string                     { return "Service" }
func (*DeleteService) Kind() string               { return "DeleteService" }
func (*ReplaceServiceFile) Kind() string          { return "ReplaceServiceFile" }
func (*ListServices) Kind() string                { return "ListServices" }
func (*Services) Kind() string                    { return "Services" }
func (*AllocateVariable) Kind() string            { return "AllocateVariable" }
func (*ReadVariable) Kind() string                { return "ReadVariable" }
func (*VariableData) Kind() string                { return "VariableData" }
func (*WriteVariable) Kind() string               { return "WriteVariable" }
func (*VariableWritten) Kind() string             { return "VariableWritten" }
func (*DeallocateVariable) Kind() string          { return "DeallocateVariable" }
func (*ListVariables) Kind() string               { return "ListVariables" }
func (*Variables) Kind() string                   { return "Variables" }
func (*GetServiceFilePath) Kind() string          { return "GetServiceFilePath" }
func (*ServiceFilePath) Kind() string             { return "ServiceFilePath" }
func (*ReportVariableChanges) Kind() string       { return "ReportVariableChanges" }
func (*VariableChangesAcknowledged) Kind() string { return "VariableChangesAcknowledged" }
func (*Subscribe) Kind() string                   { return "Subscribe" }
func (*Subscribed) Kind() string                  { return "Subscribed" }
func (*Unsubscribe) Kind() string                 { return "Unsubscribe" }
func (*Unsubscribed) Kind() string                { return "Unsubscribed" }
func (*VariablesUpdated) Kind() string            { return "VariablesUpdated" }
func (*SubscriptionEnded) Kind() string           { return "SubscriptionEnded" }
func (*Heartbeat) Kind() string                   { return "Heartbeat" }
func (*Stats) Kind() string                       { return "Stats" }
func (*Error) Kind() string                       { return "Error" }

// kinds makes an empty message of each type, by name.
var kinds = map[string]func() Message{}

func init() {
	for _, f := range []func() Message{
		func() Message { return new(Hello) },
		func() Message { return new(Welcome) },
		func() Message { return new(CreateTenant) },
		func() Message { return new(Tenant) },
		func() Message { return new(DeleteTenant) },
		func() Message { return new(Deleted) },
		func() Message { return new(ListTenants) },
		func() Message { return new(Tenants) },
		func() Message { return new(CreateService) },
		func() Message { return new(GetService) },
		func() Message { return new(Service) },
		func() Message { return new(DeleteService) },
		func() Message { return new(ReplaceServiceFile) },
		func() Message { return new(ListServices) },
		func() Message { return new(Services) },
		func() Message { return new(AllocateVariable) },
		func() Message { return new(ReadVariable) },
		func() Message { return new(VariableData) },
		func() Message { return new(WriteVariable) },
		func() Message { return new(VariableWritten) },
		func() Message { return new(DeallocateVariable) },
		func() Message { return new(ListVariables) },
		func() Message { return new(Variables) },
		func() Message { return new(GetServiceFilePath) },
		func() Message { return new(ServiceFilePath) },
		func() Message { return new(ReportVariableChanges) },
		func() Message { return new(VariableChangesAcknowledged) },
		func() Message { return new(Subscribe) },
		func() Message { return new(Subscribed) },
		func() Message { return new(Unsubscribe) },
		func() Message { return new(Unsubscribed) },
		func() Message { return new(VariablesUpdated) },
		func() Message { return new(SubscriptionEnded) },
		func() Message { return new(Heartbeat) },
		func() Message { return new(Stats) },
		func() Message { return new(Error) },
	} {
		kinds[f().Kind()] = f
	}
}

// Kinds lists every message type name.
func Kinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	return out
}
