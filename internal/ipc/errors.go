package ipc

import (
	"errors"
	"fmt"
)

// Sentinel errors, one for each wire error code (see codes). Wrap them with
// %w; CodeOf finds the code again.
var (
	ErrProtocol           = errors.New("protocol error")
	ErrUnknownMessage     = errors.New("unknown message")
	ErrInvalidRequest     = errors.New("invalid request")
	ErrInvalidName        = errors.New("invalid name")
	ErrInvalidServiceID   = errors.New("invalid service id")
	ErrFrameTooLarge      = errors.New("frame too large")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrHybridAccessDenied = errors.New("hybrid access denied")
	ErrTenantNotFound     = errors.New("tenant not found")
	ErrServiceNotFound    = errors.New("service not found")
	ErrVariableNotFound   = errors.New("variable not found")
	ErrFileNotFound       = errors.New("file not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrValueTooLarge      = errors.New("value too large")
	ErrNoSpace            = errors.New("no space")
	ErrQuotaExceeded      = errors.New("quota exceeded")
	ErrServiceDamaged     = errors.New("service damaged")
	ErrInternal           = errors.New("internal error")
)

// codes is the one table between wire error codes and Go errors.
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

// Codes lists every wire error code.
func Codes() []string {
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = c.code
	}
	return out
}

// CodeOf is the wire code for err: the first sentinel it matches, else
// INTERNAL_ERROR.
func CodeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "INTERNAL_ERROR"
}

// ErrorOf is the sentinel for a wire code, or nil for a code this version
// does not know.
func ErrorOf(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// RemoteError is an Error reply from the other side. errors.Is matches it
// against the sentinel of its code.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Is reports whether target is the sentinel of e's code.
func (e *RemoteError) Is(target error) bool {
	s := ErrorOf(e.Code)
	return s != nil && s == target
}
