package client

import (
	"errors"
	"fmt"
	"testing"

	"github.com/commy/commy/shm"
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
