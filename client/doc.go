// Package client is the Go SDK for the commy broker.
//
// Dial connects over the broker's Unix socket. A Client is safe for
// concurrent use: requests from many goroutines share one connection and are
// matched to their replies by id. Every call that waits takes a context and
// returns when it is done.
//
// A Service's values can be read over the socket (Service.Read) or, much
// faster, through a read-only mapping of the service file (Service.Map),
// which falls back to the socket where the policy grants read but not map.
// Service.Subscribe delivers change notices. Service.WorkingCopy keeps a
// local copy of every variable that the application edits in place; Sync
// finds what changed and sends it in one batch.
//
// Errors from the broker are *Error values that errors.Is matches against
// the sentinel of their code (ErrPermissionDenied, ErrVariableNotFound, ...).
// A lost connection gives errors matching ErrDisconnected; with
// WithReconnect the client dials again and restores its subscriptions and
// mappings. After Close, calls fail with ErrClosed.
package client
