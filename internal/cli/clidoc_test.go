package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/testutil"
)

// docFields reads docs/cli.md: for each "### commy NAME" section, the names
// on its "JSON fields:" line, or nil after "JSON: none".
func docFields(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	cmd := "" // "" is the conventions section: the error fields
	name := regexp.MustCompile("`([a-z_]+)`")
	for _, line := range strings.Split(string(b), "\n") {
		if c, ok := strings.CutPrefix(line, "### commy "); ok {
			cmd = c
			continue
		}
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "JSON fields:"); ok {
			for _, m := range name.FindAllStringSubmatch(rest, -1) {
				out[cmd] = append(out[cmd], m[1])
			}
		} else if strings.HasPrefix(line, "JSON: none") {
			out[cmd] = nil
		}
	}
	return out
}

// keys collects the top-level names of every JSON object in out: one
// document, an array of objects, or one object per line.
func keys(t *testing.T, out string, into map[string]bool) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		objs, ok := v.([]any)
		if !ok {
			objs = []any{v}
		}
		for _, o := range objs {
			m, ok := o.(map[string]any)
			if !ok {
				t.Fatalf("not an object: %v", o)
			}
			for k := range m {
				into[k] = true
			}
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCLIDoc runs every command with --json and checks the names it prints
// against docs/cli.md, both ways: nothing undocumented is printed, and every
// documented name shows up.
func TestCLIDoc(t *testing.T) {
	doc := docFields(t)
	sock := startBroker(t)
	t.Setenv("COMMY_SOCKET", sock)
	seen := map[string]map[string]bool{}
	runJSON := func(cmd string, args ...string) {
		t.Helper()
		code, out, errOut := commy(t, append([]string{cmd, "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("commy %s --json %s: exit %d: %s", cmd, strings.Join(args, " "), code, errOut)
		}
		if seen[cmd] == nil {
			seen[cmd] = map[string]bool{}
		}
		keys(t, out, seen[cmd])
	}
	runJSON("create", "acme")
	runJSON("create", "acme/orders")
	runJSON("alloc", "acme/orders", "count", "0")
	runJSON("alloc", "acme/orders", "gone", "x")
	runJSON("set", "acme/orders", "count", "1")
	runJSON("get", "acme/orders", "count")
	runJSON("tenants")
	runJSON("services", "acme")
	runJSON("vars", "acme/orders")
	runJSON("stats")
	runJSON("version")
	runJSON("bench", "--scenarios", "read", "--clients", "1", "--requests", "20", "--warmup", "1")

	// watch: a change, a deleted variable, then the deleted service, which
	// ends it with status 66.
	// A child process: urfave/cli's help flag is a global that two apps
	// running at once in one process would share.
	var out, errOut syncBuffer
	cmd := testutil.Child(t, "commy", -1, -1)
	cmd.Args = append(cmd.Args, "watch", "--json", "--socket", sock, "acme/orders")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := make(chan int, 1)
	go func() {
		cmd.Wait()
		code <- cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-code
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), `"changed"`) {
		if time.Now().After(deadline) {
			t.Fatalf("watch printed no change: %s %s", out.String(), errOut.String())
		}
		if c, _, e := commy(t, "set", "acme/orders", "count", "2"); c != 0 {
			t.Fatal(e)
		}
		time.Sleep(20 * time.Millisecond)
	}
	runJSON("remap", "acme/orders")
	runJSON("dealloc", "acme/orders", "gone")
	for !strings.Contains(out.String(), `"deleted"`) {
		if time.Now().After(deadline) {
			t.Fatalf("watch printed no deleted variable: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	runJSON("delete", "acme/orders")
	select {
	case c := <-code:
		code <- c // for the cleanup
		if c != ExitNotFound || !strings.Contains(out.String(), `"service_deleted"`) {
			t.Fatalf("watch of a deleted service: exit %d, want %d\n%s\n%s", c, ExitNotFound, out.String(), errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end when its service was deleted")
	}
	seen["watch"] = map[string]bool{}
	keys(t, out.String(), seen["watch"])
	runJSON("delete", "acme")

	// Errors, for any command.
	code2, _, errLine := commy(t, "get", "--json", "acme/orders", "count")
	if code2 != ExitNotFound {
		t.Errorf("get of a deleted tenant: exit %d", code2)
	}
	seen[""] = map[string]bool{}
	keys(t, errLine, seen[""])
	var e struct {
		Code    string `json:"error_code"`
		Message string `json:"message"`
	}
	if err := jsonUnmarshal(errLine, &e); err != nil || e.Code != "TENANT_NOT_FOUND" || e.Message != "tenant not found: acme" {
		t.Errorf("JSON error %q: %v", errLine, err)
	}

	// audit prints the log's records; the doc lists the Record fields.
	seen["audit"] = map[string]bool{}
	ty := reflect.TypeFor[broker.Record]()
	for i := range ty.NumField() {
		seen["audit"][strings.Split(ty.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	code3, auditOut, auditErr := commy(t, "audit", "--json", "--file", filepath.Join(filepath.Dir(sock), "data", "audit.log"))
	if code3 != 0 {
		t.Fatalf("audit --json: %d %s", code3, auditErr)
	}
	printed := map[string]bool{}
	keys(t, auditOut, printed)
	for k := range printed {
		if !seen["audit"][k] {
			t.Errorf("audit --json prints %q, which is not a Record field", k)
		}
	}

	// Every command is in the doc, and prints exactly what it says.
	for _, cmd := range App().Commands {
		if cmd.Hidden {
			continue
		}
		fields, ok := doc[cmd.Name]
		if !ok {
			t.Errorf("docs/cli.md has no \"### commy %s\" with a JSON fields or JSON: none line", cmd.Name)
			continue
		}
		if fields == nil {
			continue
		}
		got := slices.Sorted(maps.Keys(seen[cmd.Name]))
		want := slices.Sorted(slices.Values(fields))
		if !slices.Equal(got, want) {
			t.Errorf("commy %s --json prints %v; docs/cli.md says %v", cmd.Name, got, want)
		}
	}
	if got, want := slices.Sorted(maps.Keys(seen[""])), slices.Sorted(slices.Values(doc[""])); !slices.Equal(got, want) {
		t.Errorf("JSON errors have %v; docs/cli.md says %v", got, want)
	}
}

func jsonUnmarshal(s string, v any) error {
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Scan()
	return json.Unmarshal(sc.Bytes(), v)
}
