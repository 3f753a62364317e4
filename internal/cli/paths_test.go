package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/internal/testutil"
)

// TestServeSocketFirst: a second broker on a socket in use stops before it
// opens (and would recover and repair) any data directory.
func TestServeSocketFirst(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "s.sock")
	first := startProc(t, commyCommand(t, "serve", "--socket", sock, "--data-dir", filepath.Join(dir, "data")))
	dialBroker(t, sock).Close()

	second := filepath.Join(dir, "data2")
	code, stderr := startProc(t, commyCommand(t, "serve", "--socket", sock, "--data-dir", second)).wait()
	if code == 0 || !strings.Contains(stderr, "socket in use") {
		t.Errorf("second broker: exit %d, stderr:\n%s", code, stderr)
	}
	if _, err := os.Lstat(second); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second broker touched its data directory before finding the socket in use: %v", err)
	}
	first.stop()
}

// TestServeNoSharedDefault: a user without a runtime directory gets no
// default socket in a shared directory such as /tmp; the error says what to
// set.
func TestServeNoSharedDefault(t *testing.T) {
	testutil.RequireRoot(t)
	state := shortDir(t)
	if err := os.Chown(state, testutil.Nobody, testutil.Nobody); err != nil {
		t.Fatal(err)
	}
	cmd := testutil.Child(t, "commy", testutil.Nobody, testutil.Nobody)
	cmd.Args = append(cmd.Args, "serve")
	cmd.Env = append(cleanEnv(), "XDG_RUNTIME_DIR=", "XDG_STATE_HOME="+state)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() }) // it served: the bug
	err := cmd.Wait()
	kill.Stop()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out.String(), "XDG_RUNTIME_DIR") {
		t.Fatalf("serve as uid %d without XDG_RUNTIME_DIR: %v\n%s", testutil.Nobody, err, out.String())
	}
	matches, err := filepath.Glob("/tmp/commy-65534*")
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) > 0 {
		t.Errorf("a default under /tmp was made: %v", matches)
	}
}

// TestServeStartLog: the start-up log names the socket as a path and says
// who has rights when no policy is loaded.
func TestServeStartLog(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "s.sock")
	p := startProc(t, commyCommand(t, "serve", "--socket", sock, "--data-dir", filepath.Join(dir, "data"), "--log-format", "text"))
	dialBroker(t, sock).Close()
	stderr := p.stop()
	for _, want := range []string{"socket=" + sock + " ", fmt.Sprintf("only root and the broker's user (uid %d) have rights", os.Getuid())} {
		if !strings.Contains(stderr, want) {
			t.Errorf("start-up log lacks %q:\n%s", want, stderr)
		}
	}
}

// TestDialChecksSocketOwner: the CLI refuses a socket that belongs to a user
// other than root or the caller (someone who put their own broker in the
// way), says why, and dials it with --any-socket-owner.
func TestDialChecksSocketOwner(t *testing.T) {
	testutil.RequireRoot(t)
	dir := shortDir(t)
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil { // like /tmp
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, testutil.Nobody, testutil.Nobody); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, "s.sock")
	cmd := testutil.Child(t, "commy", testutil.Nobody, testutil.Nobody)
	cmd.Args = append(cmd.Args, "serve", "--socket", sock, "--data-dir", filepath.Join(run, "data"))
	cmd.Env = cleanEnv()
	p := startProc(t, cmd)
	dialBroker(t, sock).Close()

	code, _, stderr := commy(t, "--socket", sock, "tenants")
	if code != ExitPermission || !strings.Contains(stderr, "belongs to uid 65534") || !strings.Contains(stderr, "--any-socket-owner") {
		t.Errorf("tenants on a socket of uid 65534: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := commy(t, "tenants", "--any-socket-owner", "--socket", sock); code != 0 {
		t.Errorf("with --any-socket-owner: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := commy(t, "--socket", "/etc/passwd", "tenants"); code == 0 || !strings.Contains(stderr, "not a socket") {
		t.Errorf("/etc/passwd: exit %d, stderr %q", code, stderr)
	}
	p.stop()
}

// TestSighupRevokesWatch: `commy watch` as uid 65534 ends with
// PERMISSION_DENIED when a SIGHUP reload of `commy serve` withdraws its read
// right.
func TestSighupRevokesWatch(t *testing.T) {
	testutil.RequireRoot(t)
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, policy := filepath.Join(dir, "s.sock"), filepath.Join(dir, "policy.toml")
	grant := "[[grant]]\nusers = [65534]\ntenants = [\"acme\"]\nrights = [\"read\"]\n"
	if err := os.WriteFile(policy, []byte(grant), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := startProc(t, commyCommand(t, "serve", "--socket", sock, "--data-dir", filepath.Join(dir, "data"), "--policy", policy))
	dialBroker(t, sock).Close()
	for _, args := range [][]string{{"create", "acme"}, {"create", "acme/orders"}, {"alloc", "acme/orders", "v", "0"}} {
		if code, _, stderr := commy(t, append([]string{"--socket", sock}, args...)...); code != 0 {
			t.Fatalf("%v: %d %s", args, code, stderr)
		}
	}
	watch := testutil.Child(t, "commy", testutil.Nobody, testutil.Nobody)
	watch.Args = append(watch.Args, "watch", "--socket", sock, "acme/orders")
	watch.Env = cleanEnv()
	out, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w := startProc(t, watch)
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// Set until the watcher shows a change: it may not have subscribed yet.
	seen := false
	for i := 0; i < 100 && !seen; i++ {
		if code, _, stderr := commy(t, "--socket", sock, "set", "acme/orders", "v", fmt.Sprint(i)); code != 0 {
			t.Fatalf("set: %d %s", code, stderr)
		}
		select {
		case <-lines:
			seen = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !seen {
		t.Fatal("watch showed no change")
	}
	if err := os.WriteFile(policy, []byte(strings.ReplaceAll(grant, `"acme"`, `"beta"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	serve.signal(syscall.SIGHUP)
	code, stderr := w.wait()
	if code == 0 || !strings.Contains(stderr, "PERMISSION_DENIED") {
		t.Errorf("watch after the reload: exit %d, stderr %q", code, stderr)
	}
	serve.stop()
}

// TestServeWarnsOldDataDir: data left beside the socket by an earlier
// version's default is named in a warning, not silently ignored.
func TestServeWarnsOldDataDir(t *testing.T) {
	testutil.RequireRoot(t)
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(dir, "run"), filepath.Join(dir, "run", "data"), filepath.Join(dir, "state")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, testutil.Nobody, testutil.Nobody); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "run", "s.sock")
	cmd := testutil.Child(t, "commy", testutil.Nobody, testutil.Nobody)
	cmd.Args = append(cmd.Args, "serve", "--socket", sock, "--log-format", "text")
	cmd.Env = append(cleanEnv(), "XDG_STATE_HOME="+filepath.Join(dir, "state"))
	p := startProc(t, cmd)
	dialBroker(t, sock).Close()
	stderr := p.stop()
	if !strings.Contains(stderr, "earlier version") || !strings.Contains(stderr, "data_dir="+filepath.Join(dir, "state", "commy")) {
		t.Errorf("no warning about the old data directory:\n%s", stderr)
	}
}
