package client

import "github.com/commy/commy/internal/paths"

// ErrNoDefaultSocket is returned by DefaultSocket for a user other than root
// that has no private runtime directory: commy never falls back to a shared
// directory such as /tmp, where another user could put a socket first.
var ErrNoDefaultSocket = paths.ErrNoRuntimeDir

// DefaultSocket is the broker socket the commy CLI uses when none is named,
// resolved the same way: COMMY_SOCKET if set; /run/commy/commy.sock for
// root; else $XDG_RUNTIME_DIR/commy/commy.sock (/run/user/<uid> when
// XDG_RUNTIME_DIR is unset and that directory belongs to the user); else an
// error matching ErrNoDefaultSocket.
func DefaultSocket() (string, error) { return paths.Socket() }
