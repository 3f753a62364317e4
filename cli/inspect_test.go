package cli

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commy/commy/broker"
)

// startBroker serves a broker on a socket in a new directory.
func startBroker(t *testing.T) string {
	t.Helper()
	dir := shortDir(t)
	b, err := broker.New(broker.Config{DataDir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := broker.Listen(sock, 0o666)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Serve(l)
	}()
	t.Cleanup(func() {
		b.Close()
		<-done
	})
	return sock
}

func commy(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"commy"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestInspectionCommands drives the inspection commands against a broker.
func TestInspectionCommands(t *testing.T) {
	sock := startBroker(t)
	t.Setenv("COMMY_SOCKET", "")
	steps := []struct {
		args []string
		code int
		out  string // substring of stdout, or of stderr when code != 0
	}{
		{[]string{"--socket", sock, "create", "acme"}, 0, ""},
		{[]string{"create", "--socket", sock, "acme/orders"}, 0, "orders.mem"},
		{[]string{"alloc", "--socket", sock, "acme/orders", "count", "0"}, 0, ""},
		{[]string{"alloc", "--socket", sock, "--hex", "acme/orders", "bin", "00ff"}, 0, ""},
		{[]string{"set", "--socket", sock, "acme/orders", "count", "42"}, 0, "count version 2"},
		{[]string{"get", "--socket", sock, "acme/orders", "count"}, 0, "42\n"},
		{[]string{"get", "--socket", sock, "--mapped", "acme/orders", "count"}, 0, "42\n"},
		{[]string{"get", "--socket", sock, "acme/orders", "bin"}, 0, "0x00ff\n"},
		{[]string{"get", "--socket", sock, "--format", "hex", "acme/orders", "count"}, 0, "3432\n"},
		{[]string{"vars", "--socket", sock, "acme/orders"}, 0, "count  2     64        2"},
		{[]string{"services", "--socket", sock, "acme"}, 0, "acme_orders"},
		{[]string{"tenants", "--socket", sock}, 0, "acme"},
		{[]string{"stats", "--socket", sock}, 0, "tenants"},
		{[]string{"get", "--socket", sock, "acme/orders", "nope"}, 1, "commy: VARIABLE_NOT_FOUND:"},
		{[]string{"create", "--socket", sock, "bad_tenant"}, 1, "commy: INVALID_NAME:"},
		{[]string{"get", "--socket", sock, "acme"}, 2, "usage: commy get TENANT/SERVICE VARIABLE"},
		{[]string{"get", "--socket", sock, "--format", "octal", "acme/orders", "count"}, 2, "--format"},
		{[]string{"tenants", "--socket", filepath.Join(filepath.Dir(sock), "none.sock")}, 1, "dial"},
		{[]string{"dealloc", "--socket", sock, "acme/orders", "bin"}, 0, ""},
		{[]string{"delete", "--socket", sock, "acme/orders"}, 0, ""},
		{[]string{"delete", "--socket", sock, "acme"}, 0, ""},
	}
	for _, s := range steps {
		code, out, errOut := commy(t, s.args...)
		where := out
		if s.code != 0 {
			where = errOut
		}
		if code != s.code || !strings.Contains(where, s.out) {
			t.Errorf("commy %s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", strings.Join(s.args, " "), code, s.code, out, errOut, s.out)
		}
	}
	// COMMY_SOCKET names the socket when --socket does not.
	t.Setenv("COMMY_SOCKET", sock)
	code, out, errOut := commy(t, "tenants", "--json")
	var ts []string
	if code != 0 || json.Unmarshal([]byte(out), &ts) != nil || len(ts) != 0 {
		t.Errorf("tenants --json via COMMY_SOCKET: %d %q %q", code, out, errOut)
	}
}
