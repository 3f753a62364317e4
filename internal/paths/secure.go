package paths

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

var (
	// ErrInsecure means a directory or file could be changed by a user
	// other than root and the one who uses it (see CheckDir).
	ErrInsecure = errors.New("paths: insecure")
	// ErrNotSocket means a path names something other than a Unix socket.
	ErrNotSocket = errors.New("paths: not a socket")
)

// MakeDir creates dir and its missing parents with exactly mode, whatever
// the umask, then checks dir with CheckDir.
func MakeDir(dir string, mode os.FileMode, uid int) error {
	if err := makeDirs(filepath.Clean(dir), mode); err != nil {
		return err
	}
	return CheckDir(dir, uid)
}

func makeDirs(dir string, mode os.FileMode) error {
	if _, err := os.Stat(dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := makeDirs(parent, mode); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, mode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made meanwhile by someone else; CheckDir judges it
		}
		return err
	}
	// Through a descriptor, so that a symbolic link put in its place
	// meanwhile is not followed.
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Chmod(mode)
}

// CheckDir refuses a directory that another user could change, as ssh's
// StrictModes does: the directory (symbolic links resolved) must belong to
// root or uid and be writable by nobody else, and so must every directory
// above it, except that a sticky directory such as /tmp may be writable by
// all (nobody can rename or remove what another user put in it).
func CheckDir(dir string, uid int) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return err
	}
	for p, first := real, true; ; p, first = filepath.Dir(p), false {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory", ErrInsecure, p)
		}
		owner := Owner(fi)
		if owner != 0 && owner != uid {
			return fmt.Errorf("%w: %s belongs to uid %d, not to root or uid %d", ErrInsecure, p, owner, uid)
		}
		perm := fi.Mode()
		if perm&0o022 != 0 && (first || perm&os.ModeSticky == 0) {
			return fmt.Errorf("%w: %s is writable by others (mode %#o)", ErrInsecure, p, perm.Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// CheckSocket checks that path is a Unix socket that belongs to root or
// to uid, so that a client does not hand its requests to a socket another
// user put there.
func CheckSocket(path string, uid int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%w: %s is a %s", ErrNotSocket, path, kind(fi.Mode()))
	}
	if owner := Owner(fi); owner != 0 && owner != uid {
		return fmt.Errorf("%w: socket %s belongs to uid %d, not to root or uid %d", ErrInsecure, path, owner, uid)
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "file of mode " + m.String()
}

// Owner is the owner uid of a file, or -1 when the system does not say.
func Owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
