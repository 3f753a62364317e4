package client

import (
	"errors"

	"github.com/commy/commy/ipc"
)

// Error is an error reply from the broker. errors.Is matches it against the
// sentinel of its code, e.g. errors.Is(err, client.ErrPermissionDenied).
type Error = ipc.RemoteError

// The broker's error codes, one sentinel each.
var (
	ErrProtocol           = ipc.ErrProtocol
	ErrUnknownMessage     = ipc.ErrUnknownMessage
	ErrInvalidRequest     = ipc.ErrInvalidRequest
	ErrInvalidName        = ipc.ErrInvalidName
	ErrInvalidServiceID   = ipc.ErrInvalidServiceID
	ErrFrameTooLarge      = ipc.ErrFrameTooLarge
	ErrPermissionDenied   = ipc.ErrPermissionDenied
	ErrHybridAccessDenied = ipc.ErrHybridAccessDenied
	ErrTenantNotFound     = ipc.ErrTenantNotFound
	ErrServiceNotFound    = ipc.ErrServiceNotFound
	ErrVariableNotFound   = ipc.ErrVariableNotFound
	ErrFileNotFound       = ipc.ErrFileNotFound
	ErrAlreadyExists      = ipc.ErrAlreadyExists
	ErrValueTooLarge      = ipc.ErrValueTooLarge
	ErrNoSpace            = ipc.ErrNoSpace
	ErrQuotaExceeded      = ipc.ErrQuotaExceeded
	ErrServiceDamaged     = ipc.ErrServiceDamaged
	ErrInternal           = ipc.ErrInternal
)

// Errors of mapped reads (Mapping.Read), which the broker is not asked about.
// They wrap the shm error they come from.
var (
	// ErrBusy: a value kept changing under the reader for too long; retry.
	ErrBusy = errors.New("client: variable busy")
	// ErrCorrupt: the mapped service file does not follow the layout.
	ErrCorrupt = errors.New("client: corrupt service file")
	// ErrServiceDeleted: the broker deleted the service (it marks the file;
	// the mapping stays valid but holds nothing). It comes with
	// ErrServiceNotFound, which a socket read gets.
	ErrServiceDeleted = errors.New("client: service deleted")
)

var (
	// ErrClosed: the client, subscription or mapping was closed.
	ErrClosed = errors.New("client: closed")
	// ErrDisconnected: the connection to the broker was lost.
	ErrDisconnected = errors.New("client: disconnected from the broker")
)
