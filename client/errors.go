package client

import (
	"errors"
	"fmt"

	"github.com/commy/commy/internal/ipc"
)

// Error is an error reply from the broker: its wire code (such as
// "SERVICE_NOT_FOUND", see docs/protocol.md) and message. errors.Is matches
// it against the sentinel of its code, e.g. errors.Is(err,
// client.ErrPermissionDenied); a code this version does not know matches
// none.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s := errorOf(e.Code)
	return s != nil && s == target
}

// The broker's error codes, one sentinel each.
var (
	ErrProtocol           = errors.New("client: protocol error")
	ErrUnknownMessage     = errors.New("client: unknown message")
	ErrInvalidRequest     = errors.New("client: invalid request")
	ErrInvalidName        = errors.New("client: invalid name")
	ErrInvalidServiceID   = errors.New("client: invalid service id")
	ErrFrameTooLarge      = errors.New("client: frame too large")
	ErrPermissionDenied   = errors.New("client: permission denied")
	ErrHybridAccessDenied = errors.New("client: hybrid access denied")
	ErrTenantNotFound     = errors.New("client: tenant not found")
	ErrServiceNotFound    = errors.New("client: service not found")
	ErrVariableNotFound   = errors.New("client: variable not found")
	ErrFileNotFound       = errors.New("client: file not found")
	ErrAlreadyExists      = errors.New("client: already exists")
	ErrValueTooLarge      = errors.New("client: value too large")
	ErrNoSpace            = errors.New("client: no space")
	ErrQuotaExceeded      = errors.New("client: quota exceeded")
	ErrServiceDamaged     = errors.New("client: service damaged")
	ErrInternal           = errors.New("client: internal error")
)

// codes is the one table between wire error codes and the client's
// sentinels.
var codes = []struct {
	code string
	err  error
}{
	{"PROTOCOL_ERROR", ErrProtocol},
	{"UNKNOWN_MESSAGE", ErrUnknownMessage},
	{"INVALID_REQUEST", ErrInvalidRequest},
	{"INVALID_NAME", ErrInvalidName},
	{"INVALID_SERVICE_ID", ErrInvalidServiceID},
	{"FRAME_TOO_LARGE", ErrFrameTooLarge},
	{"PERMISSION_DENIED", ErrPermissionDenied},
	{"HYBRID_ACCESS_DENIED", ErrHybridAccessDenied},
	{"TENANT_NOT_FOUND", ErrTenantNotFound},
	{"SERVICE_NOT_FOUND", ErrServiceNotFound},
	{"VARIABLE_NOT_FOUND", ErrVariableNotFound},
	{"FILE_NOT_FOUND", ErrFileNotFound},
	{"ALREADY_EXISTS", ErrAlreadyExists},
	{"VALUE_TOO_LARGE", ErrValueTooLarge},
	{"NO_SPACE", ErrNoSpace},
	{"QUOTA_EXCEEDED", ErrQuotaExceeded},
	{"SERVICE_DAMAGED", ErrServiceDamaged},
	{"INTERNAL_ERROR", ErrInternal},
}

// errorOf is the sentinel of a wire code, or nil for a code this version
// does not know.
func errorOf(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// remoteError is the Error of an error reply.
func remoteError(m *ipc.Error) *Error { return &Error{Code: m.ErrorCode, Message: m.Message} }

// as is m as a reply of type T, or the Error it carries.
func as[T ipc.Message](m ipc.Message) (T, error) {
	if e, ok := m.(*ipc.Error); ok {
		var zero T
		return zero, remoteError(e)
	}
	return ipc.As[T](m)
}

// local adds the client sentinel to an error of the connection (a frame too
// large, a protocol error) that matches one of ipc's.
func local(err error) error {
	for _, c := range codes {
		if s := ipc.ErrorOf(c.code); s != nil && errors.Is(err, s) {
			return fmt.Errorf("%w: %w", c.err, err)
		}
	}
	return err
}

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
