package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/brokertest"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/testutil"
)

// startBroker serves a broker until the test ends, and returns its socket.
func startBroker(t *testing.T) string {
	_, sock := brokertest.Serve(t, broker.Config{})
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
		{[]string{"--socket", sock, "create", "acme"}, 0, "created tenant acme"},
		{[]string{"create", "--socket", sock, "acme/orders"}, 0, "created service acme/orders (file "},
		{[]string{"alloc", "--socket", sock, "acme/orders", "count", "0"}, 0, "acme/orders count version 1"},
		{[]string{"alloc", "--socket", sock, "--format", "hex", "acme/orders", "bin", "0001ff"}, 0, ""},
		{[]string{"alloc", "--socket", sock, "acme/orders", "hexlike", "0x0001ff"}, 0, ""},
		{[]string{"alloc", "--socket", sock, "--format", "base64", "acme/orders", "b64", "AAH/"}, 0, ""},
		{[]string{"set", "--socket", sock, "acme/orders", "count", "42"}, 0, "acme/orders count version 2"},
		{[]string{"get", "--socket", sock, "acme/orders", "count"}, 0, "\"42\"\n"},
		{[]string{"get", "--socket", sock, "--mapped", "acme/orders", "count"}, 0, "\"42\"\n"},
		{[]string{"get", "--socket", sock, "--format", "text", "acme/orders", "count"}, 0, "42\n"},
		// Text that looks like hex and bytes never print alike.
		{[]string{"get", "--socket", sock, "acme/orders", "bin"}, 0, "hex:0001ff\n"},
		{[]string{"get", "--socket", sock, "acme/orders", "hexlike"}, 0, "\"0x0001ff\"\n"},
		{[]string{"get", "--socket", sock, "acme/orders", "b64"}, 0, "hex:0001ff\n"},
		{[]string{"get", "--socket", sock, "--format", "base64", "acme/orders", "bin"}, 0, "AAH/\n"},
		{[]string{"get", "--socket", sock, "--format", "text", "acme/orders", "bin"}, ExitInvalid, "not UTF-8"},
		{[]string{"get", "--socket", sock, "--format", "hex", "acme/orders", "count"}, 0, "3432\n"},
		{[]string{"vars", "--socket", sock, "acme/orders"}, 0, "count    2 B   64 B      2"},
		{[]string{"vars", "--socket", sock, "--bytes", "acme/orders"}, 0, "count    2     64        2"},
		{[]string{"services", "--socket", sock, "acme"}, 0, "acme/orders  4"},
		{[]string{"tenants", "--socket", sock}, 0, "acme"},
		{[]string{"stats", "--socket", sock}, 0, "tenants"},
		{[]string{"version"}, 0, "protocol 1"},
		{[]string{"--version"}, 0, "protocol 1"},
		// Failures, by class.
		{[]string{"get", "--socket", sock, "acme/orders", "nope"}, ExitNotFound, "commy: VARIABLE_NOT_FOUND: variable not found: acme/orders/nope"},
		{[]string{"get", "--socket", sock, "acme/none", "x"}, ExitNotFound, "commy: SERVICE_NOT_FOUND:"},
		{[]string{"create", "--socket", sock, "bad_tenant"}, ExitInvalid, "commy: INVALID_NAME:"},
		{[]string{"create", "--socket", sock, "acme"}, ExitConflict, "commy: ALREADY_EXISTS:"},
		{[]string{"alloc", "--socket", sock, "--format", "hex", "acme/orders", "x", "zz"}, ExitInvalid, "VALUE is not hex"},
		{[]string{"get", "--socket", sock, "acme"}, ExitUsage, "missing arguments; usage: commy get [flags] TENANT/SERVICE VARIABLE"},
		{[]string{"get", "--socket", sock, "acme/orders", "count", "extra"}, ExitUsage, `unexpected argument "extra"`},
		{[]string{"tenants", "--socket", sock, "extra"}, ExitUsage, `unexpected argument "extra"`},
		{[]string{"get", "--socket", sock, "acme/orders", "count", "--json"}, ExitUsage, "flag --json after an argument: flags go before the arguments"},
		{[]string{"get", "--socket", sock, "--format", "octal", "acme/orders", "count"}, ExitUsage, "--format"},
		{[]string{"get", "--nope", "acme/orders", "count"}, ExitUsage, "flag provided but not defined"},
		{[]string{"bogus"}, ExitUsage, `unknown command "bogus"`},
		{[]string{"help", "bogus"}, ExitUsage, `unknown command "bogus"`},
		{[]string{"help", "get"}, 0, "commy get [command options] TENANT/SERVICE VARIABLE"},
		{[]string{"get", "--help"}, 0, "commy get [command options] TENANT/SERVICE VARIABLE"},
		{[]string{"--help"}, 0, "COMMANDS:"},
		{[]string{"--bogus", "tenants"}, ExitUsage, "flag provided but not defined"},
		{[]string{"tenants", "--socket", filepath.Join(filepath.Dir(sock), "none.sock")}, ExitUnreachable, "no broker at " + filepath.Join(filepath.Dir(sock), "none.sock") + ": no such socket; start a broker with `commy serve`"},
		{[]string{"tenants", "--socket", "/etc/passwd"}, ExitUnreachable, "/etc/passwd is not a socket"},
		{[]string{"dealloc", "--socket", sock, "acme/orders", "bin"}, 0, "acme/orders bin deallocated"},
		{[]string{"delete", "--socket", sock, "acme/orders"}, 0, "deleted service acme/orders"},
		{[]string{"delete", "--socket", sock, "acme"}, 0, "deleted tenant acme"},
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

// TestErrorsAsJSON: with --json, even a usage error is one JSON line on
// stderr, and a stale socket says nothing listens.
func TestErrorsAsJSON(t *testing.T) {
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	for _, tc := range []struct {
		args []string
		exit int
		code string
		msg  string
	}{
		{[]string{"get", "--json", "acme"}, ExitUsage, "USAGE", "missing arguments"},
		{[]string{"--json", "bogus"}, ExitUsage, "USAGE", `unknown command "bogus"`},
		{[]string{"tenants", "--json", "--nope"}, ExitUsage, "USAGE", "flag provided but not defined"},
		{[]string{"tenants", "--json", "--socket", stale}, ExitUnreachable, "BROKER_UNREACHABLE", "nothing listens on the socket"},
		{[]string{"audit", "--json", "--file", filepath.Join(dir, "none.log")}, ExitNotFound, "FILE_NOT_FOUND", "none.log"},
	} {
		code, out, errOut := commy(t, tc.args...)
		var e struct {
			Code    string `json:"error_code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal([]byte(errOut), &e); err != nil || code != tc.exit || e.Code != tc.code || !strings.Contains(e.Message, tc.msg) || out != "" {
			t.Errorf("commy %s: exit %d, stdout %q, stderr %q; want %d, %s, %q", strings.Join(tc.args, " "), code, out, errOut, tc.exit, tc.code, tc.msg)
		}
	}
}

func TestValueOutput(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"}, {324 << 10, "324 KiB"}, {16 << 20, "16 MiB"}} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	long := strings.Repeat("ab", 8<<20)
	cut := truncate(long, 80, len(long))
	if len(cut) != 80 || !strings.HasSuffix(cut, "... (16 MiB, --full to see all)") {
		t.Errorf("truncate to 80: %d characters, %q", len(cut), cut)
	}
	if got := truncate(long, 0, len(long)); got != long {
		t.Error("truncate with no width cut the value")
	}
	if got := truncate("short", 80, 5); got != "short" {
		t.Errorf("truncate of a short value: %q", got)
	}
	t.Setenv("COLUMNS", "77")
	if w := termWidth(&bytes.Buffer{}); w != 77 {
		t.Errorf("termWidth with COLUMNS=77: %d", w)
	}
}

var grantLine = regexp.MustCompile(`^# (\[\[grant\]\]|[a-z]+ += )`)

// TestExamplePolicy: contrib/policy.toml.example parses, with the commy group
// (which the Debian package creates) standing for one that exists here.
func TestExamplePolicy(t *testing.T) {
	b, err := os.ReadFile("../../contrib/policy.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`groups  = ["commy"]`)) {
		t.Fatal(`the example no longer grants admin to group "commy"; update this test and contrib/debian`)
	}
	if _, err := broker.ParsePolicy(bytes.ReplaceAll(b, []byte(`"commy"`), []byte(`"root"`))); err != nil {
		t.Fatalf("contrib/policy.toml.example: %v", err)
	}
	// Uncommented, the other grants parse too, given users that exist.
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if grantLine.MatchString(l) {
			l = l[2:]
		}
		lines = append(lines, l)
	}
	all := strings.NewReplacer(`"commy"`, `"root"`, `"dashboard"`, `"root"`).Replace(strings.Join(lines, "\n"))
	if _, err := broker.ParsePolicy([]byte(all)); err != nil {
		t.Fatalf("contrib/policy.toml.example, uncommented: %v\n%s", err, all)
	}
}

// TestEveryCodeHasAClass: each wire error code exits with the status of its
// class; only the internal ones exit 70.
func TestEveryCodeHasAClass(t *testing.T) {
	internal := map[string]bool{"PROTOCOL_ERROR": true, "UNKNOWN_MESSAGE": true, "INTERNAL_ERROR": true, "SERVICE_DAMAGED": true}
	for _, code := range ipc.Codes() {
		if got := exitOfCode(code); (got == ExitInternal) != internal[code] {
			t.Errorf("%s exits %d: give it a class in cli/exit.go and docs/cli.md", code, got)
		}
	}
	for code, want := range map[string]int{"SERVICE_DELETED": ExitNotFound, "ACCESS_REVOKED": ExitPermission, "QUOTA_EXCEEDED": ExitLimit, "SOMETHING_ODD": ExitInternal} {
		if got := exitOfCode(code); got != want {
			t.Errorf("%s exits %d, want %d", code, got, want)
		}
	}
}

// TestAuditColumns: the audit table's columns do not move with the width of
// the values, so lines printed by `audit -f` at different times line up.
func TestAuditColumns(t *testing.T) {
	log := filepath.Join(t.TempDir(), "audit.log")
	recs := `{"time":"2026-12-01T10:00:00.123456789Z","event":"connect","pid":7,"uid":0}
{"time":"2026-12-01T10:00:01Z","event":"report_variable_changes","pid":1234567,"uid":1000,"tenant":"acme","service":"orders","service_id":"acme_orders","variables":["a"]}
`
	if err := os.WriteFile(log, []byte(recs), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := commy(t, "audit", "--file", log)
	if code != 0 {
		t.Fatalf("audit: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("audit printed %q", out)
	}
	col := func(line, field string) int { return strings.Index(line, field) }
	if a, b, c := col(lines[0], "PID"), col(lines[1], "      7"), col(lines[2], "1234567"); a < 0 || b != c {
		t.Errorf("PID columns at %d, %d, %d:\n%s", a, b, c, out)
	}
	if a, b := col(lines[0], "WHAT"), col(lines[2], "acme/orders"); a != b {
		t.Errorf("WHAT at %d, acme/orders at %d:\n%s", a, b, out)
	}
	if !strings.HasPrefix(lines[1], "2026-12-01T10:00:00.123456Z ") || !strings.HasPrefix(lines[2], "2026-12-01T10:00:01.000000Z ") {
		t.Errorf("times not in one width:\n%s", out)
	}
}

// TestCompletion: the scripts ask commy for the words, which it gives.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "complete -o bashdefault -o default -F _commy commy", "zsh": "#compdef commy", "fish": "complete -c commy"} {
		code, out, errOut := commy(t, "completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, %q lacks %q; %s", shell, code, out, want, errOut)
		}
	}
	// urfave/cli prints the words on the process's stdout: a child.
	words, err := commyCommand(t, "--generate-bash-completion").Output()
	if err != nil || !strings.Contains(string(words), "watch\n") || !strings.Contains(string(words), "completion\n") {
		t.Errorf("--generate-bash-completion: %v %q", err, words)
	}
	if code, _, errOut := commy(t, "completion", "csh"); code != ExitUsage || !strings.Contains(errOut, `unknown shell "csh"`) {
		t.Errorf("completion csh: %d %q", code, errOut)
	}
}

// TestSocketPermission: a socket the user may not connect to exits 77 and
// says so, not that no broker is there.
func TestSocketPermission(t *testing.T) {
	testutil.RequireRoot(t)
	sock := startBroker(t)
	if err := os.Chmod(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := testutil.Child(t, "commy", testutil.Nobody, testutil.Nobody)
	cmd.Args = append(cmd.Args, "tenants", "--json", "--socket", sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var e struct {
		Code    string `json:"error_code"`
		Message string `json:"message"`
	}
	if cmd.ProcessState.ExitCode() != ExitPermission || json.Unmarshal(stderr.Bytes(), &e) != nil || e.Code != "PERMISSION_DENIED" || !strings.Contains(e.Message, "no permission to connect to "+sock) {
		t.Fatalf("tenants as nobody on a 0600 socket: %v, exit %d, stderr %q", err, cmd.ProcessState.ExitCode(), stderr.String())
	}
}
