package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/commy/commy/internal/paths"
)

// ErrInUse: another broker is listening on the socket path.
var ErrInUse = errors.New("broker: socket in use")

// Listen creates the Unix socket at path with the given mode (the policy, not
// the mode, decides what a client may do). A directory it creates for the
// socket is searchable by all (0755), so that other users reach a socket
// whose mode lets them; one that exists must belong to root or the broker's
// user and be writable by nobody else (see paths.CheckDir). A stale socket
// file left by a broker that died is replaced; a live one is an ErrInUse
// error. The listener removes the file when closed.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if err := paths.MakeDir(filepath.Dir(path), 0o755, os.Geteuid()); err != nil {
		return nil, fmt.Errorf("broker: socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("broker: %s exists and is not a socket", path)
		}
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s", ErrInUse, path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("broker: probe %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("broker: remove stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("broker: listen: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("broker: socket mode: %w", err)
	}
	return l, nil
}
