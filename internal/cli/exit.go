package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
)

// Exit statuses, by class of failure, in the spirit of sysexits.h. Every
// command uses the same ones; docs/cli.md lists them.
const (
	ExitOK          = 0
	ExitFailure     = 1  // anything else, such as `commy serve` failing to start
	ExitUsage       = 64 // EX_USAGE: bad command line
	ExitInvalid     = 65 // EX_DATAERR: a name or value the broker or commy refuses
	ExitNotFound    = 66 // EX_NOINPUT: no such tenant, service, variable or file
	ExitUnreachable = 69 // EX_UNAVAILABLE: no broker at the socket, or the connection was lost
	ExitInternal    = 70 // EX_SOFTWARE: an internal or protocol error
	ExitConflict    = 73 // EX_CANTCREAT: it already exists
	ExitLimit       = 75 // EX_TEMPFAIL: a size, space or quota limit
	ExitPermission  = 77 // EX_NOPERM: the policy or the file system says no
)

// classes maps the broker's error codes to exit statuses. Codes not listed
// are classed by their name (see exitOfCode).
var classes = map[string]int{
	"PROTOCOL_ERROR":       ExitInternal,
	"UNKNOWN_MESSAGE":      ExitInternal,
	"INTERNAL_ERROR":       ExitInternal,
	"SERVICE_DAMAGED":      ExitInternal, // like CORRUPT: the broker's data, not the request
	"INVALID_REQUEST":      ExitInvalid,
	"INVALID_NAME":         ExitInvalid,
	"INVALID_SERVICE_ID":   ExitInvalid,
	"FRAME_TOO_LARGE":      ExitLimit,
	"VALUE_TOO_LARGE":      ExitLimit,
	"NO_SPACE":             ExitLimit,
	"QUOTA_EXCEEDED":       ExitLimit,
	"PERMISSION_DENIED":    ExitPermission,
	"HYBRID_ACCESS_DENIED": ExitPermission,
	"TENANT_NOT_FOUND":     ExitNotFound,
	"SERVICE_NOT_FOUND":    ExitNotFound,
	"VARIABLE_NOT_FOUND":   ExitNotFound,
	"FILE_NOT_FOUND":       ExitNotFound,
	"ALREADY_EXISTS":       ExitConflict,
}

// exitOfCode is the exit status for a broker error code. A code this table
// does not know yet (a newer broker's) is classed by its name: ..._NOT_FOUND,
// ..._DELETED, ..._DENIED, ..._REVOKED, ..._EXCEEDED, INVALID_..., else
// internal.
func exitOfCode(code string) int {
	if e, ok := classes[code]; ok {
		return e
	}
	switch {
	case strings.HasSuffix(code, "_NOT_FOUND"), strings.HasSuffix(code, "_DELETED"):
		return ExitNotFound
	case strings.HasSuffix(code, "_DENIED"), strings.HasSuffix(code, "_REVOKED"):
		return ExitPermission
	case strings.HasSuffix(code, "_EXCEEDED"), strings.HasSuffix(code, "_TOO_LARGE"), strings.HasSuffix(code, "_LIMIT"):
		return ExitLimit
	case strings.HasPrefix(code, "INVALID_"):
		return ExitInvalid
	case strings.HasSuffix(code, "_EXISTS"):
		return ExitConflict
	}
	return ExitInternal
}

// Error codes of failures found by commy itself, not by the broker.
const (
	CodeUsage       = "USAGE"
	CodeUnreachable = "BROKER_UNREACHABLE"
	// CodeUntrustedSocket: the socket belongs to neither root nor the caller.
	CodeUntrustedSocket = "UNTRUSTED_SOCKET"
	CodeBadValue        = "INVALID_VALUE"
	CodeFailed          = "FAILED"
)

// cliError is a failure found by commy itself, with its code and class.
type cliError struct {
	code string
	exit int
	msg  string
	err  error // the cause, or nil
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// usageError is a mistake in the command line (exit 64).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func badValuef(format string, a ...any) error {
	return &cliError{code: CodeBadValue, exit: ExitInvalid, msg: fmt.Sprintf(format, a...)}
}

// classify gives an error its code, exit status and message.
func classify(err error) (code string, exit int, msg string) {
	var ce *cliError
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return CodeUsage, ExitUsage, ue.msg
	case errors.As(err, &ce):
		return ce.code, ce.exit, ce.msg
	}
	if code, msg, ok := remote(err); ok {
		return code, exitOfCode(code), msg
	}
	switch {
	case errors.Is(err, client.ErrServiceDeleted):
		return "SERVICE_NOT_FOUND", ExitNotFound, err.Error()
	case errors.Is(err, client.ErrBusy):
		return "BUSY", ExitLimit, err.Error()
	case errors.Is(err, client.ErrCorrupt):
		return "CORRUPT", ExitInternal, err.Error()
	case errors.Is(err, client.ErrDisconnected):
		return CodeUnreachable, ExitUnreachable, err.Error()
	case errors.Is(err, os.ErrNotExist):
		return "FILE_NOT_FOUND", ExitNotFound, err.Error()
	case errors.Is(err, os.ErrPermission):
		return "PERMISSION_DENIED", ExitPermission, err.Error()
	}
	return CodeFailed, ExitFailure, err.Error()
}

// remote is the code and message of the broker's error reply in err: from
// the client, or from bench, which speaks the protocol itself.
func remote(err error) (code, msg string, ok bool) {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code, ce.Message, true
	}
	var re *ipc.RemoteError
	if errors.As(err, &re) {
		return re.Code, re.Message, true
	}
	return "", "", false
}

// report prints err on stderr, as JSON ({"error_code", "message"}) when asked,
// and returns the exit status.
func report(stderr io.Writer, err error, asJSON bool) int {
	code, exit, msg := classify(err)
	if asJSON {
		b, _ := json.Marshal(struct {
			Code    string `json:"error_code"`
			Message string `json:"message"`
		}{code, msg})
		fmt.Fprintf(stderr, "%s\n", b)
		return exit
	}
	if _, _, ok := remote(err); ok {
		fmt.Fprintf(stderr, "commy: %s: %s\n", code, msg) // the broker's code, for searching the docs
	} else {
		fmt.Fprintf(stderr, "commy: %s\n", msg)
	}
	return exit
}

// dialError explains a failed dial: what was tried, and what to do.
func dialError(path string, err error) error {
	hint := "start a broker with `commy serve`, or name one with --socket PATH or COMMY_SOCKET"
	var msg string
	exit := ExitUnreachable
	code := CodeUnreachable
	switch {
	case errors.Is(err, syscall.ENOENT):
		msg = fmt.Sprintf("no broker at %s: no such socket; %s", path, hint)
	case errors.Is(err, syscall.ECONNREFUSED):
		msg = fmt.Sprintf("no broker at %s: nothing listens on the socket (a broker that stopped?); %s", path, hint)
	case errors.Is(err, syscall.ENOTSOCK), errors.Is(err, syscall.EPROTOTYPE):
		msg = fmt.Sprintf("%s is not a socket; name the broker's socket with --socket PATH or COMMY_SOCKET", path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		msg = fmt.Sprintf("no permission to connect to %s: ask for access to the socket, or run as its owner", path)
		exit, code = ExitPermission, "PERMISSION_DENIED"
	default:
		msg = fmt.Sprintf("cannot reach the broker at %s: %v", path, err)
	}
	return &cliError{code: code, exit: exit, msg: msg, err: err}
}

// notSocket is dialError's answer for a path that exists but is not a
// socket, which connect(2) reports as ECONNREFUSED.
func notSocket(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() == os.ModeSocket {
		return nil
	}
	return dialError(path, syscall.ENOTSOCK)
}
