package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/testutil"
)

// TestAttackDescriptors: a uid with create on one tenant creates services
// until the broker's descriptor reserve stops it; the broker still accepts
// root, still passes other users their service files, and comes back from a
// restart with every service and room to accept.
func TestAttackDescriptors(t *testing.T) {
	testutil.RequireRoot(t)
	const nofile = 200
	dir, err := os.MkdirTemp("", "commy-fd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	sock, data := filepath.Join(dir, "s.sock"), filepath.Join(dir, "data")
	policy := fmt.Sprintf(`
[[grant]]
users = [%d]
tenants = ["evil"]
rights = ["create"]

[[grant]]
users = [%d]
tenants = ["good"]
rights = ["read", "map"]
`, testutil.Nobody, testutil.Nobody-1)
	env := []string{"COMMY_POLICY=" + policy, "COMMY_NOFILE=" + fmt.Sprint(nofile)}
	cmd := startChild(t, sock, data, env...)
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	defer func() { stop() }()
	h := &harness{sock: sock}
	seedService(t, h, "good", "s")
	c := h.dial(t)
	if err := c.CreateTenant(t.Context(), "evil"); err != nil {
		t.Fatal(err)
	}

	var steps []map[string]any
	for i := 0; i < nofile; i++ {
		steps = append(steps, map[string]any{"type": "CreateService", "tenant_id": "evil", "service_name": fmt.Sprint("s", i)})
	}
	res := runScript(t, h, testutil.Nobody, testutil.Nobody, steps...)
	created := 0
	for created < len(res) && res[created].Reply == "Service" {
		created++
	}
	if created == 0 || created == len(res) || created > nofile-64 {
		t.Fatalf("created %d services under a limit of %d descriptors: %s", created, nofile, replies(res))
	}
	for _, r := range res[created:] {
		if r.Reply != "QUOTA_EXCEEDED" {
			t.Fatalf("after %d services: %s", created, r.Reply)
		}
	}
	check := func() {
		t.Helper()
		// Root connects and is served; another user gets its file.
		rc, err := client.Dial(t.Context(), sock)
		if err != nil {
			t.Fatalf("root cannot connect: %v", err)
		}
		defer rc.Close()
		infos, err := rc.Services(t.Context(), "evil")
		if err != nil || len(infos) != created {
			t.Fatalf("evil has %d services (%v), want %d", len(infos), err, created)
		}
		got := runScript(t, h, testutil.Nobody-1, testutil.Nobody-1,
			map[string]any{"type": "GetServiceFilePath", "tenant_id": "good", "service_name": "s"})
		if got[0].Reply != "ServiceFilePath" || !got[0].FD || got[0].Mapped != "seed" {
			t.Fatalf("another user's GetServiceFilePath: %+v", got[0])
		}
	}
	check()
	c.Close()
	stop()
	cmd = startChild(t, sock, data, env...)
	check()
	// The reserve still holds: the two connections of the first run (three
	// descriptors counted each) are gone, so a few more may fit, never
	// past it.
	res = runScript(t, h, testutil.Nobody, testutil.Nobody, steps[created:created+8]...)
	more := strings.Count(replies(res), "Service")
	if more > 6 || created+more > nofile-64 || res[len(res)-1].Reply != "QUOTA_EXCEEDED" {
		t.Fatalf("after the restart, with %d services: %s", created, replies(res))
	}
}
