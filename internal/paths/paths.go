package paths

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Environment variables that name the socket and the data directory.
const (
	SocketEnv  = "COMMY_SOCKET"
	DataDirEnv = "COMMY_DATA_DIR"
)

// Root's defaults: the socket in a runtime directory that is cleared at boot,
// the data in the state directory that the systemd unit's StateDirectory=
// also names.
const (
	RootSocket  = "/run/commy/commy.sock"
	RootDataDir = "/var/lib/commy"
)

var (
	// ErrNoRuntimeDir means a user other than root has no private runtime
	// directory for the socket (XDG_RUNTIME_DIR unset and no /run/user/<uid>
	// owned by the user). commy never falls back to a shared directory such
	// as /tmp, where another user could take the path first.
	ErrNoRuntimeDir = errors.New("paths: no XDG_RUNTIME_DIR for the socket (set it, COMMY_SOCKET or --socket)")
	// ErrNoStateDir means a user other than root has neither XDG_STATE_HOME
	// nor HOME for the data directory.
	ErrNoStateDir = errors.New("paths: no XDG_STATE_HOME or HOME for the data directory (set one, COMMY_DATA_DIR or --data-dir)")
)

// Socket is the broker socket when none is named: COMMY_SOCKET if set;
// /run/commy/commy.sock for root; else $XDG_RUNTIME_DIR/commy/commy.sock, with
// /run/user/<uid> standing in for an unset XDG_RUNTIME_DIR when that
// directory exists and belongs to the user. It never names a directory
// other users can write to by default.
func Socket() (string, error) {
	if s := os.Getenv(SocketEnv); s != "" {
		return s, nil
	}
	return DefaultSocket(os.Getuid())
}

// DefaultSocket is Socket for uid without looking at COMMY_SOCKET.
func DefaultSocket(uid int) (string, error) {
	if uid == 0 {
		return RootSocket, nil
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "commy", "commy.sock"), nil
	}
	d := filepath.Join("/run/user", strconv.Itoa(uid))
	if ownedDir(d, uid) {
		return filepath.Join(d, "commy", "commy.sock"), nil
	}
	return "", ErrNoRuntimeDir
}

// DataDir is the broker's data directory when none is named: COMMY_DATA_DIR
// if set; /var/lib/commy for root; else $XDG_STATE_HOME/commy, which
// defaults to ~/.local/state/commy.
func DataDir() (string, error) {
	if d := os.Getenv(DataDirEnv); d != "" {
		return d, nil
	}
	return DefaultDataDir(os.Getuid())
}

// DefaultDataDir is DataDir for uid without looking at COMMY_DATA_DIR.
func DefaultDataDir(uid int) (string, error) {
	if uid == 0 {
		return RootDataDir, nil
	}
	// The XDG base directory specification says to ignore relative paths.
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "commy"), nil
	}
	if h := os.Getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "commy"), nil
	}
	return "", ErrNoStateDir
}

// Help texts for the defaults.
const (
	SocketHelp  = RootSocket + " for root, else $XDG_RUNTIME_DIR/commy/commy.sock"
	DataDirHelp = RootDataDir + " for root, else $XDG_STATE_HOME/commy (~/.local/state/commy)"
)

// ownedDir reports whether path is a directory that belongs to uid and that
// nobody else can write to.
func ownedDir(path string, uid int) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid
}
