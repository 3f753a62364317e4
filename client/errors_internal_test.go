package client

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// TestMappedReadErrors: the shm errors of a mapped read match the client's
// sentinels, and still the shm ones.
func TestMappedReadErrors(t *testing.T) {
	for _, tc := range []struct{ in, want error }{
		{shm.ErrBusy, ErrBusy},
		{fmt.Errorf("x: %w", shm.ErrCorrupt), ErrCorrupt},
		{shm.ErrNotFound, ErrVariableNotFound},
		{shm.ErrClosed, ErrClosed},
		{shm.ErrServiceDeleted, ErrServiceDeleted},
		{shm.ErrServiceDeleted, ErrServiceNotFound},
	} {
		got := shmErr(tc.in, "v")
		if !errors.Is(got, tc.want) {
			t.Errorf("shmErr(%v) = %v, does not match %v", tc.in, got, tc.want)
		}
		if tc.in != shm.ErrClosed && tc.in != shm.ErrNotFound && !errors.Is(got, tc.in) {
			t.Errorf("shmErr(%v) = %v, lost the shm error", tc.in, got)
		}
	}
}

// TestWireCodes: the client's table and ipc's hold the same codes, and the
// client's sentinels are its own, not ipc's.
func TestWireCodes(t *testing.T) {
	for _, code := range ipc.Codes() {
		if s := errorOf(code); s == nil || s == ipc.ErrorOf(code) {
			t.Errorf("%s: client sentinel %v", code, s)
		}
	}
	for _, c := range codes {
		if ipc.ErrorOf(c.code) == nil {
			t.Errorf("%s: not a wire code", c.code)
		}
	}
}

// TestErrorReply: an error reply becomes an *Error that matches the client's
// sentinel of its code, and not ipc's.
func TestErrorReply(t *testing.T) {
	_, err := as[*ipc.Welcome](&ipc.Error{ErrorCode: "NO_SPACE", Message: "m"})
	var e *Error
	if !errors.As(err, &e) || e.Code != "NO_SPACE" || e.Message != "m" {
		t.Fatalf("as: %#v", err)
	}
	if !errors.Is(err, ErrNoSpace) || errors.Is(err, ipc.ErrNoSpace) || errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("%v: matches the wrong sentinels", err)
	}
	if errors.Is(&Error{Code: "NEW_CODE"}, ErrInternal) {
		t.Error("an unknown code matches ErrInternal")
	}
}

// TestLocalErrors: a connection error that matches an ipc sentinel matches
// the client's of the same code too, and keeps the ipc one.
func TestLocalErrors(t *testing.T) {
	in := fmt.Errorf("ipc: encode X: %w", ipc.ErrFrameTooLarge)
	got := local(in)
	if !errors.Is(got, ErrFrameTooLarge) || !errors.Is(got, ipc.ErrFrameTooLarge) {
		t.Errorf("local(%v) = %v", in, got)
	}
	if got := local(ipc.ErrEmptyFrame); !errors.Is(got, ErrProtocol) {
		t.Errorf("local(%v) = %v, not ErrProtocol", ipc.ErrEmptyFrame, got)
	}
	if got := local(io.EOF); got != io.EOF {
		t.Errorf("local(EOF) = %v", got)
	}
}
