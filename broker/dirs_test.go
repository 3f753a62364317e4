package broker_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/paths"
	"github.com/commy/commy/internal/testutil"
)

// sharedDir is a directory like /tmp: writable by all, sticky.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "commy-shared")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// asNobody runs a shell script as uid 65534.
func asNobody(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testutil.Nobody, Gid: testutil.Nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid %d: %s: %v\n%s", testutil.Nobody, script, err, out)
	}
}

// victim is a root-owned read-only file the broker must never write.
func victim(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shadow")
	data := []byte("root:secret\n")
	if err := os.WriteFile(path, data, 0o440); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// TestDataDirTakenOver: another user who made the data directory first, in a
// shared directory, with the audit log a link to a file of root's, gets the
// broker to refuse, and the file is untouched.
func TestDataDirTakenOver(t *testing.T) {
	testutil.RequireRoot(t)
	shared := sharedDir(t)
	target, before := victim(t)
	data := filepath.Join(shared, "commy-data")
	asNobody(t, "mkdir -m 0777 "+data+" && ln -s "+target+" "+data+"/audit.log")
	b, err := broker.New(broker.Config{DataDir: data})
	if err == nil {
		b.Close()
		t.Fatal("broker.New accepted a data directory uid 65534 made")
	}
	if !errors.Is(err, paths.ErrInsecure) {
		t.Errorf("want paths.ErrInsecure, got %v", err)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(after, before) {
		t.Errorf("the linked file changed: %q", after)
	}

	// Owned by nobody but not writable by others: still not the broker's.
	data2 := filepath.Join(shared, "commy-data2")
	asNobody(t, "mkdir -m 0755 "+data2)
	if b, err := broker.New(broker.Config{DataDir: data2}); !errors.Is(err, paths.ErrInsecure) {
		if b != nil {
			b.Close()
		}
		t.Errorf("data directory of uid 65534: %v, want paths.ErrInsecure", err)
	}
}

// TestAuditLogLink: an audit log that is a symbolic link is refused even in
// the broker's own directory (O_NOFOLLOW).
func TestAuditLogLink(t *testing.T) {
	target, before := victim(t)
	dir := t.TempDir()
	link := filepath.Join(dir, "audit.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{DataDir: filepath.Join(dir, "data"), AuditLog: link})
	if err == nil {
		b.Close()
		t.Fatal("audit log through a symbolic link accepted")
	}
	if !errors.Is(err, paths.ErrInsecure) {
		t.Errorf("want paths.ErrInsecure, got %v", err)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(after, before) {
		t.Errorf("the linked file changed: %q", after)
	}
}

// TestSocketDirTakenOver: a socket directory another user made first is
// refused, so that they cannot swap the socket for their own.
func TestSocketDirTakenOver(t *testing.T) {
	testutil.RequireRoot(t)
	shared := sharedDir(t)
	run := filepath.Join(shared, "commy-run")
	asNobody(t, "mkdir -m 0755 "+run)
	l, err := broker.Listen(filepath.Join(run, "commy.sock"), 0o666)
	if err == nil {
		l.Close()
		t.Fatal("Listen accepted a socket directory uid 65534 made")
	}
	if !errors.Is(err, paths.ErrInsecure) {
		t.Errorf("want paths.ErrInsecure, got %v", err)
	}
	// A shared sticky directory itself is no place for a socket either.
	if l, err := broker.Listen(filepath.Join(shared, "commy.sock"), 0o666); !errors.Is(err, paths.ErrInsecure) {
		if l != nil {
			l.Close()
		}
		t.Errorf("socket directly in a world-writable directory: %v", err)
	}
}

// TestSocketDirSearchable: the directories Listen makes are 0755 whatever
// the umask, so that another user reaches the socket.
func TestSocketDirSearchable(t *testing.T) {
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("", "commy-t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "a", "b", "commy.sock")
	old := syscall.Umask(0o077)
	h := startIn(t, broker.Config{DataDir: filepath.Join(dir, "data")}, sock)
	syscall.Umask(old)
	for _, d := range []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v, want 0755", d, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "data")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory: %v %v, want 0700", fi.Mode(), err)
	}
	res := runScript(t, h, testutil.Nobody, testutil.Nobody, map[string]any{"type": "ListTenants"})
	if res[0].Reply != "Tenants" {
		t.Errorf("uid 65534: %+v", res)
	}
}

// TestMigrateTenants: a data directory with tenants beside the audit log, as
// before, is moved under tenants/ on start, a tenant named "tenants"
// included, and every value survives.
func TestMigrateTenants(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	h := start(t, broker.Config{DataDir: data})
	seedService(t, h, "acme", "orders")
	seedService(t, h, "tenants", "x")
	h.stop(t)
	// The old layout: <data>/<tenant>/<service>.mem.
	old := filepath.Join(data, "old")
	for _, step := range [][2]string{
		{filepath.Join(data, "tenants"), old},
		{filepath.Join(old, "acme"), filepath.Join(data, "acme")},
		{filepath.Join(old, "tenants"), filepath.Join(data, "tenants")},
	} {
		if err := os.Rename(step[0], step[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(old); err != nil {
		t.Fatal(err)
	}
	h2 := start(t, broker.Config{DataDir: data})
	c := h2.dial(t)
	for _, ts := range [][2]string{{"acme", "orders"}, {"tenants", "x"}} {
		svc, err := c.Service(t.Context(), ts[0], ts[1])
		if err != nil {
			t.Fatalf("%s/%s after the migration: %v", ts[0], ts[1], err)
		}
		v, _, err := svc.Read(t.Context(), "v")
		if err != nil || string(v) != "seed" {
			t.Errorf("%s/%s v = %q, %v", ts[0], ts[1], v, err)
		}
		if _, err := os.Stat(filepath.Join(data, "tenants", ts[0], ts[1]+".mem")); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "acme")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old tenant directory left: %v", err)
	}
}

// TestMigrateLeavesOthersAlone: a directory in the data directory that
// holds anything but service files, such as the socket's of a broker that
// listens before it opens its data (as commy serve does), is not moved.
func TestMigrateLeavesOthersAlone(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	sock := filepath.Join(data, "run", "commy.sock")
	l, err := broker.Listen(sock, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := broker.New(broker.Config{DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("the socket's directory was moved: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "tenants", "run")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tenants/run: %v", err)
	}
}
