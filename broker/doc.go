// Package broker is the commy broker: it keeps tenants, their services and
// the services' variables in shared-memory files, serves wire protocol v1 on
// Unix sockets, checks every request against the policy, writes the audit log
// and pushes VariablesUpdated notices to subscribers.
//
// A Broker is used like net/http's Server: New, Serve on one or more
// listeners, then Shutdown or Close.
package broker
