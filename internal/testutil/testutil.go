// Package testutil holds what commy's tests share: a TestMain that fails on
// leaked goroutines and descriptors, and child processes running as another
// user.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const childEnv = "COMMY_TEST_CHILD"

// Children are entry points a test binary can be re-executed into with
// Child; each returns the process exit code.
type Children map[string]func() int

// Main runs the tests, or a child entry point when the binary was started by
// Child, and fails the run if goroutines or descriptors leaked.
func Main(m *testing.M, children Children) {
	if name := os.Getenv(childEnv); name != "" {
		fn, ok := children[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "testutil: unknown child %q\n", name)
			os.Exit(2)
		}
		os.Exit(fn())
	}
	// Create the netpoller's own descriptors before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.SetDeadline(time.Now())
		r.Close()
		w.Close()
	}
	before := fds()
	running := goleak.IgnoreCurrent() // goroutines from before the tests are not theirs
	code := m.Run()
	if exported.dir != "" {
		os.RemoveAll(exported.dir)
	}
	if code == 0 {
		if err := goleak.Find(running); err != nil {
			fmt.Fprintf(os.Stderr, "leaked goroutines: %v\n", err)
			code = 1
		}
		var after []string
		for i := 0; i < 50; i++ { // descriptors closed by finalizers or late goroutines
			if after = fds(); len(after) <= len(before) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(after) > len(before) {
			fmt.Fprintf(os.Stderr, "leaked descriptors: %d before, %d after:\n  %s\n", len(before), len(after), strings.Join(after, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

// fds lists this process's open descriptors and what they refer to, but
// for ipc.SendBatch's io_uring instances: a process-wide pool, like the
// runtime poller's own.
func fds() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if target == "anon_inode:[io_uring]" {
			continue
		}
		out = append(out, e.Name()+" -> "+target)
	}
	sort.Strings(out)
	return out
}

// Child returns a command that re-executes the test binary into the named
// entry point (see Main), running as uid and gid when uid >= 0.
func Child(t testing.TB, name string, uid, gid int, env ...string) *exec.Cmd {
	t.Helper()
	bin := os.Args[0]
	if uid >= 0 {
		bin = exportBinary(t)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+name), env...)
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	return cmd
}

// RequireRoot skips the test when it cannot switch users, saying why.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root to run a child as another uid (euid %d)", os.Geteuid())
	}
}

// Nobody is the uid and gid of an unprivileged second user.
const Nobody = 65534

var exported struct {
	sync.Once
	dir, bin string
	err      error
}

// exportBinary copies the test binary where another user may execute it: the
// go build cache is private to its owner.
func exportBinary(t testing.TB) string {
	t.Helper()
	exported.Do(func() {
		exported.dir, exported.err = os.MkdirTemp("", "commy-test-")
		if exported.err != nil {
			return
		}
		data, err := os.ReadFile(os.Args[0])
		if err != nil {
			exported.err = err
			return
		}
		exported.bin = filepath.Join(exported.dir, filepath.Base(os.Args[0]))
		if exported.err = os.WriteFile(exported.bin, data, 0o755); exported.err == nil {
			exported.err = os.Chmod(exported.dir, 0o755)
		}
	})
	if exported.err != nil {
		t.Fatalf("export test binary: %v", exported.err)
	}
	return exported.bin
}
