package broker_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/testutil"
)

// TestExeOfReusedPid: a client that connects and exits before the broker
// accepts, its pid then taken by another program, is not recorded as that
// program: the broker's pidfd of the peer (SO_PEERPIDFD) says it is gone.
func TestExeOfReusedPid(t *testing.T) {
	testutil.RequireRoot(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1) to take the pid")
	}
	if sleep, err = filepath.EvalSymlinks(sleep); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "commy-t")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // the client is uid 65534
		t.Fatal(err)
	}
	sock, data := filepath.Join(dir, "s.sock"), filepath.Join(dir, "data")
	brokerProc := testutil.Child(t, "serve", -1, -1, "COMMY_SOCK="+sock, "COMMY_DATA="+data)
	out, err := brokerProc.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := brokerProc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		brokerProc.Process.Signal(syscall.SIGCONT)
		brokerProc.Process.Signal(syscall.SIGTERM)
		brokerProc.Wait()
	}()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("broker: %q %v", line, err)
	}
	if err := brokerProc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	client := testutil.Child(t, "connect", testutil.Nobody, testutil.Nobody, "COMMY_SOCK="+sock)
	pidText, err := client.Output()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatal(err)
	}
	// Give the pid to sleep(1): the kernel hands out ns_last_pid+1 next.
	var taker *exec.Cmd
	for try := 0; try < 50 && taker == nil; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid: %v", err)
		}
		c := exec.Command(sleep, "30")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if c.Process.Pid == pid {
			taker = c
			break
		}
		c.Process.Kill()
		c.Wait()
	}
	if taker == nil {
		t.Skip("another process kept taking the pid")
	}
	defer func() {
		taker.Process.Kill()
		taker.Wait()
	}()
	if err := brokerProc.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		f, err := os.Open(filepath.Join(data, "audit.log"))
		if err != nil {
			continue
		}
		var rec *broker.Record
		broker.ReadAudit(f, func(r broker.Record) error {
			if r.Event == broker.EventConnect && int(r.PID) == pid {
				rec = &r
			}
			return nil
		})
		f.Close()
		if rec != nil {
			if rec.Exe == sleep {
				t.Fatalf("the connect record names %s, which took the pid after the client exited", rec.Exe)
			}
			return
		}
	}
	t.Fatal("no connect record for the client")
}
