package cli

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultSocket is where the broker listens unless told otherwise:
// $XDG_RUNTIME_DIR/commy/commy.sock, else /run/commy/commy.sock for root,
// else /tmp/commy-<uid>/commy.sock.
func DefaultSocket() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "commy", "commy.sock")
	}
	if os.Getuid() == 0 {
		return "/run/commy/commy.sock"
	}
	return fmt.Sprintf("/tmp/commy-%d/commy.sock", os.Getuid())
}

// defaultDataDir is beside the socket.
func defaultDataDir(socket string) string {
	return filepath.Join(filepath.Dir(socket), "data")
}
