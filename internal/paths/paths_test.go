package paths

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestDefaults(t *testing.T) {
	home := t.TempDir()
	tests := []struct {
		name               string
		uid                int
		env                map[string]string
		socket, data       string
		socketErr, dataErr error
	}{
		{name: "root", uid: 0, env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/0", "XDG_STATE_HOME": "/x", "HOME": "/root"},
			socket: "/run/commy/commy.sock", data: "/var/lib/commy"},
		{name: "user", uid: 4242, env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/4242", "XDG_STATE_HOME": "/st", "HOME": home},
			socket: "/run/user/4242/commy/commy.sock", data: "/st/commy"},
		{name: "user without XDG_STATE_HOME", uid: 4242, env: map[string]string{"XDG_RUNTIME_DIR": "/r", "XDG_STATE_HOME": "", "HOME": home},
			socket: "/r/commy/commy.sock", data: filepath.Join(home, ".local/state/commy")},
		{name: "relative XDG paths are ignored", uid: 4242, env: map[string]string{"XDG_RUNTIME_DIR": "rel", "XDG_STATE_HOME": "rel", "HOME": home},
			socketErr: ErrNoRuntimeDir, data: filepath.Join(home, ".local/state/commy")},
		{name: "user with nothing", uid: 4242, env: map[string]string{"XDG_RUNTIME_DIR": "", "XDG_STATE_HOME": "", "HOME": ""},
			socketErr: ErrNoRuntimeDir, dataErr: ErrNoStateDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			s, err := DefaultSocket(tt.uid)
			if s != tt.socket || !errors.Is(err, tt.socketErr) {
				t.Errorf("DefaultSocket = %q, %v; want %q, %v", s, err, tt.socket, tt.socketErr)
			}
			d, err := DefaultDataDir(tt.uid)
			if d != tt.data || !errors.Is(err, tt.dataErr) {
				t.Errorf("DefaultDataDir = %q, %v; want %q, %v", d, err, tt.data, tt.dataErr)
			}
		})
	}
}

// TestNeverShared: without XDG_RUNTIME_DIR, a user's default socket is in
// /run/user/<uid> only when that directory is the user's own and private.
func TestNeverShared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make /run/user/<uid> for another uid")
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	const uid = 64999
	dir := filepath.Join("/run/user", strconv.Itoa(uid))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if _, err := DefaultSocket(uid); !errors.Is(err, ErrNoRuntimeDir) {
		t.Errorf("root-owned %s: %v, want ErrNoRuntimeDir", dir, err)
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
	if s, err := DefaultSocket(uid); err != nil || s != dir+"/commy/commy.sock" {
		t.Errorf("own %s: %q, %v", dir, s, err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := DefaultSocket(uid); !errors.Is(err, ErrNoRuntimeDir) {
		t.Errorf("world-writable %s: %v, want ErrNoRuntimeDir", dir, err)
	}
}

func TestEnvironmentWins(t *testing.T) {
	t.Setenv(SocketEnv, "/srv/x.sock")
	t.Setenv(DataDirEnv, "/srv/data")
	if s, err := Socket(); s != "/srv/x.sock" || err != nil {
		t.Errorf("Socket = %q, %v", s, err)
	}
	if d, err := DataDir(); d != "/srv/data" || err != nil {
		t.Errorf("DataDir = %q, %v", d, err)
	}
}
