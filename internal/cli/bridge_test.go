package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/internal/bridge"
	"github.com/commy/commy/internal/testutil"
)

// commyProc starts `commy args...` as a child process.
func commyProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := testutil.Child(t, "commy", -1, -1, env...)
	cmd.Args = append(cmd.Args, args...)
	return startProc(t, cmd)
}

// TestBridgeWalkthrough follows docs/federation.md with two "hosts": a
// development NATS server, two brokers and two bridges as processes; a
// value made on one host appears on the other, the bridge reports ready to
// systemd, and `bridge status` answers. The bridges run on one CPU unless
// --procs says otherwise.
func TestBridgeWalkthrough(t *testing.T) {
	dir := shortDir(t)
	for _, k := range append(systemdEnv, "GOMAXPROCS") {
		t.Setenv(k, "")
	}
	os.Unsetenv("GOMAXPROCS")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	nats := commyProc(t, nil, "bridge", "nats", "--listen", addr, "--store", filepath.Join(dir, "nats"))
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the development NATS server does not listen")
		}
	}
	n := listenNotify(t, dir)
	var bridges, brokers []*proc
	for _, h := range []string{"a", "b"} {
		sock := filepath.Join(dir, h+".sock")
		brokers = append(brokers, commyProc(t, nil, "--socket", sock, "serve", "--data-dir", filepath.Join(dir, h)))
		waitForFile(t, sock)
		conf := filepath.Join(dir, h+".toml")
		os.WriteFile(conf, []byte(fmt.Sprintf("host_id = %q\nsocket = %q\nstate_dir = %q\n[nats]\nurls = [\"nats://%s\"]\n[[federate]]\ntenant = \"edge\"\n",
			h, sock, filepath.Join(dir, h+"-bridge"), addr)), 0o644)
		var env []string
		args := []string{"bridge", "--config", conf}
		if h == "b" {
			env = []string{"NOTIFY_SOCKET=" + n.path}
			args = append(args, "--procs", "2")
		}
		bridges = append(bridges, commyProc(t, env, args...))
	}
	n.expectState(t, "READY=1")

	sa, sb := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	for _, args := range [][]string{{"create", "edge"}, {"create", "edge/flags"}, {"alloc", "edge/flags", "dark_mode", "on"}} {
		var out, errOut bytes.Buffer
		if code := run(append([]string{"commy", "--socket", sa}, args...), &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var out, errOut bytes.Buffer
		if run([]string{"commy", "--socket", sb, "get", "edge/flags", "dark_mode"}, &out, &errOut) == 0 && strings.TrimSpace(out.String()) == `"on"` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the value did not reach host b: %s %s", out.String(), errOut.String())
		}
	}

	// The status is a snapshot taken every 100ms.
	var out, errOut bytes.Buffer
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out.Reset()
		errOut.Reset()
		if code := run([]string{"commy", "bridge", "status", "--config", filepath.Join(dir, "b.toml"), "--json"}, &out, &errOut); code != 0 {
			t.Fatalf("bridge status: exit %d: %s", code, errOut.String())
		}
		var st bridge.Status
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("bridge status --json: %v: %s", err, out.String())
		}
		if st.HostID == "b" && st.NATS == "CONNECTED" && st.CaughtUp && slices.Contains(st.Services, "edge/flags") && st.Applied > 0 && st.AppliedSeq > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge status: %+v", st)
		}
	}

	// commy bench's federation scenario, against its floor on the same NATS.
	var rep benchReport
	out.Reset()
	errOut.Reset()
	if code := run([]string{"commy", "--socket", sa, "bench", "--json", "-t", "federation", "--remote-socket", sb,
		"--nats", "nats://" + addr, "--service", "edge/bench", "--rounds", "30", "--warmup", "5"}, &out, &errOut); code != 0 {
		t.Fatalf("bench -t federation: exit %d: %s", code, errOut.String())
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bench --json: %v: %s", err, out.String())
	}
	systems := map[string]bool{}
	for _, r := range rep.Results {
		systems[r.System] = true
		if r.Scenario != "federation" || r.Ops != 30 || r.P50Micros <= 0 || r.P50Micros > r.P99Micros || r.P99Micros > r.MaxMicros {
			t.Errorf("federation result %+v", r)
		}
	}
	if len(rep.Results) != 2 || !systems["commy"] || !systems["jetstream"] || len(rep.Ratios) != 1 || rep.Ratios[0].P50 <= 0 {
		t.Errorf("federation: results %+v, ratios %+v", rep.Results, rep.Ratios)
	}
	// Every measured write was waited for on b: the last one (the 71st
	// value: 1 first, then 35 floor and 35 bridged ones, alternating) is
	// there at once.
	out.Reset()
	if code := run([]string{"commy", "--socket", sb, "get", "--format", "hex", "edge/bench", "bench"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "4700000000000000") {
		t.Errorf("b's value after the bench: exit %d: %q", code, out.String())
	}
	// A service no bridge mirrors never reaches b: a clear error, not a hang.
	out.Reset()
	errOut.Reset()
	if code := run([]string{"commy", "--socket", sa, "bench", "-t", "federation", "--remote-socket", sb,
		"--nats", "nats://" + addr, "--rounds", "3"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "federate") {
		t.Errorf("unmirrored service: exit %d: %s", code, errOut.String())
	}

	for i, p := range bridges {
		if log, want := p.stop(), fmt.Sprintf(" procs=%d ", i+1); !strings.Contains(log, want) {
			t.Errorf("bridge %d: want%sin the log:\n%s", i, want, log)
		}
	}
	n.expectState(t, "STOPPING=1")
	for _, p := range brokers {
		p.stop()
	}
	nats.stop()

	// Without a bridge, status says where it looked.
	out.Reset()
	errOut.Reset()
	if code := run([]string{"commy", "bridge", "status", "--config", filepath.Join(dir, "b.toml")}, &out, &errOut); code != ExitUnreachable || !strings.Contains(errOut.String(), "status.sock") {
		t.Fatalf("status without a bridge: exit %d: %s", code, errOut.String())
	}
}

func TestBridgeUsage(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("state_dir = \"/tmp/x\"\nsurprise = 1\n[[federate]]\ntenant = \"t\"\n"), 0o644)
	none := filepath.Join(dir, "none.toml")
	os.WriteFile(none, []byte("state_dir = \"/tmp/x\"\n"), 0o644)
	for _, args := range [][]string{
		{"commy", "bridge"},
		{"commy", "bridge", "--config", bad},
		{"commy", "bridge", "--config", none},
		{"commy", "bridge", "status"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, code, ExitUsage, errOut.String())
		}
	}
}
