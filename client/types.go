package client

import (
	"maps"

	"github.com/commy/commy/internal/ipc"
)

// The SDK's own result types. Their JSON names are the protocol's field
// names, which `commy ... --json` prints too.

// ServiceInfo describes a service in a listing.
type ServiceInfo struct {
	ServiceID   string `json:"service_id"`   // "<tenant>_<name>"
	ServiceName string `json:"service_name"` // the name it was created with
	FileSize    uint64 `json:"file_size"`    // bytes of its shared-memory file
	Variables   uint64 `json:"variables"`    // how many variables it holds
}

// VariableInfo describes a variable in a listing.
type VariableInfo struct {
	Name     string `json:"name"`
	Size     uint64 `json:"size"`     // bytes of the current value
	Capacity uint64 `json:"capacity"` // room before the value must move; a multiple of 64
	Version  uint64 `json:"version"`  // 1 after Allocate, +1 per write
}

// NamedValue is one value of a Report.
type NamedValue struct {
	Name  string `json:"name"`
	Value []byte `json:"value"` // nil is an empty value
}

// Welcome is the broker's answer to Hello: its version, the protocol it
// speaks, and who the kernel says this client is.
type Welcome struct {
	Protocol      uint64 `json:"protocol"`
	ServerVersion string `json:"server_version"`
	ClientID      uint64 `json:"client_id"` // this connection's id in the broker's logs
	PID           int64  `json:"pid"`       // SO_PEERCRED of this connection
	UID           uint64 `json:"uid"`
	GID           uint64 `json:"gid"`
	MaxFrame      uint64 `json:"max_frame"` // largest frame either side may send
}

// Stats are the broker's figures (Client.Stats, admin only). Maps are never
// nil.
type Stats struct {
	ServerVersion       string                       `json:"server_version"`
	UptimeSeconds       float64                      `json:"uptime_seconds"`
	Connections         uint64                       `json:"connections"`
	ConnectionsTotal    uint64                       `json:"connections_total"`
	ConnectionsRejected uint64                       `json:"connections_rejected"`
	Tenants             uint64                       `json:"tenants"`
	Services            uint64                       `json:"services"`
	Variables           uint64                       `json:"variables"`
	ServiceFileBytes    uint64                       `json:"service_file_bytes"`
	BytesIn             uint64                       `json:"bytes_in"`
	BytesOut            uint64                       `json:"bytes_out"`
	Requests            map[string]uint64            `json:"requests"`       // by request type
	RequestErrors       map[string]map[string]uint64 `json:"request_errors"` // by request type, then error code
	Errors              map[string]uint64            `json:"errors"`         // by error code
	NoticesSent         uint64                       `json:"notices_sent"`
	NoticesMerged       uint64                       `json:"notices_merged"`
	AuditEvents         map[string]uint64            `json:"audit_events"` // by event
	AuditErrors         uint64                       `json:"audit_errors"`
	PolicyReloads       uint64                       `json:"policy_reloads"`
	PolicyReloadErrors  uint64                       `json:"policy_reload_errors"`
	Probe               string                       `json:"probe"` // the eBPF probe's state, "" when off
	ProbeEvents         uint64                       `json:"probe_events"`
	ProbeLost           uint64                       `json:"probe_lost"`
	Limits              []LimitUsage                 `json:"limits"` // resources against their limits; never nil
}

// LimitUsage is one resource's use against its limit (see docs/security.md,
// "Resources").
type LimitUsage struct {
	Scope   string `json:"scope"` // "broker", "uid" or "tenant"
	ID      string `json:"id"`    // the uid or tenant id; "" for the broker
	Limit   string `json:"limit"` // as QUOTA_EXCEEDED names it
	Used    int64  `json:"used"`
	Max     int64  `json:"max"` // -1: no limit
	Refused uint64 `json:"refused"`
}

func welcomeOf(w ipc.Welcome) Welcome {
	return Welcome{Protocol: w.Protocol, ServerVersion: w.ServerVersion, ClientID: w.ClientID, PID: w.PID, UID: w.UID, GID: w.GID, MaxFrame: w.MaxFrame}
}

func statsOf(s *ipc.Stats) *Stats {
	nonNil := func(m map[string]uint64) map[string]uint64 {
		if m == nil {
			return map[string]uint64{}
		}
		return maps.Clone(m)
	}
	re := make(map[string]map[string]uint64, len(s.RequestErrors))
	for k, v := range s.RequestErrors {
		re[k] = nonNil(v)
	}
	return &Stats{
		ServerVersion: s.ServerVersion, UptimeSeconds: s.UptimeSeconds,
		Connections: s.Connections, ConnectionsTotal: s.ConnectionsTotal, ConnectionsRejected: s.ConnectionsRejected,
		Tenants: s.Tenants, Services: s.Services, Variables: s.Variables, ServiceFileBytes: s.ServiceFileBytes,
		BytesIn: s.BytesIn, BytesOut: s.BytesOut,
		Requests: nonNil(s.Requests), RequestErrors: re, Errors: nonNil(s.Errors),
		NoticesSent: s.NoticesSent, NoticesMerged: s.NoticesMerged,
		AuditEvents: nonNil(s.AuditEvents), AuditErrors: s.AuditErrors,
		PolicyReloads: s.PolicyReloads, PolicyReloadErrors: s.PolicyReloadErrors,
		Probe: s.Probe, ProbeEvents: s.ProbeEvents, ProbeLost: s.ProbeLost,
		Limits: limitsOf(s.Limits),
	}
}

func limitsOf(in []ipc.LimitUsage) []LimitUsage {
	out := make([]LimitUsage, len(in))
	for i, l := range in {
		out[i] = LimitUsage{Scope: l.Scope, ID: l.ID, Limit: l.Limit, Used: l.Used, Max: l.Max, Refused: l.Refused}
	}
	return out
}
