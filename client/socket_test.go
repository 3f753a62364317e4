package client_test

import (
	"errors"
	"os"
	"testing"

	"github.com/commy/commy/client"
)

func TestDefaultSocket(t *testing.T) {
	t.Setenv("COMMY_SOCKET", "/srv/commy.sock")
	if s, err := client.DefaultSocket(); s != "/srv/commy.sock" || err != nil {
		t.Errorf("with COMMY_SOCKET: %q, %v", s, err)
	}
	t.Setenv("COMMY_SOCKET", "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	s, err := client.DefaultSocket()
	want := "/run/user/4242/commy/commy.sock"
	if os.Getuid() == 0 {
		want = "/run/commy/commy.sock"
	}
	if s != want || err != nil {
		t.Errorf("DefaultSocket = %q, %v; want %q", s, err, want)
	}
	if os.Getuid() != 0 {
		t.Setenv("XDG_RUNTIME_DIR", "")
		if _, err := client.DefaultSocket(); err != nil && !errors.Is(err, client.ErrNoDefaultSocket) {
			t.Errorf("without a runtime directory: %v", err)
		}
	}
}
