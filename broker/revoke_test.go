package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/testutil"
)

// childService dials COMMY_SOCK and opens COMMY_SERVICE (tenant/service):
// the start of every child that acts on one service.
func childService(ctx context.Context) (*client.Client, *client.Service, error) {
	c, err := client.Dial(ctx, os.Getenv("COMMY_SOCK"))
	if err != nil {
		return nil, nil, err
	}
	tenant, name, _ := strings.Cut(os.Getenv("COMMY_SERVICE"), "/")
	svc, err := c.Service(ctx, tenant, name)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, svc, nil
}

// subscriberChild subscribes to COMMY_SERVICE (tenant/service) on
// COMMY_SOCK and prints "subscribed", then "notice" for each notice and
// "ended CODE" when the subscription ends.
func subscriberChild() int {
	ctx := context.Background()
	c, svc, err := childService(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer c.Close()
	sub, err := svc.Subscribe(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("subscribed")
	for {
		if _, err := sub.Next(ctx); err != nil {
			var re *client.Error
			if errors.As(err, &re) {
				fmt.Println("ended", re.Code)
			} else {
				fmt.Println("ended", err)
			}
			return 0
		}
		fmt.Println("notice")
	}
}

// TestRevokeOnReload: a policy reload that withdraws read ends the
// subscriptions of a connected uid with a SubscriptionEnded push, stops its
// notices, and is audited.
func TestRevokeOnReload(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.toml")
	grant := "[[grant]]\nusers = [65534]\ntenants = [\"acme\"]\nrights = [\"read\"]\n"
	if err := os.WriteFile(policyFile, []byte(grant), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := broker.LoadPolicy(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, broker.Config{Policy: p})
	seedService(t, h, "acme", "orders")
	seedService(t, h, "beta", "keep")
	c := h.dial(t)
	ctx := t.Context()
	svc, err := c.Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}

	cmd := testutil.Child(t, "subscriber", testutil.Nobody, testutil.Nobody, "COMMY_SOCK="+h.sock, "COMMY_SERVICE=acme/orders")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("subscriber exited; stderr: %s", stderr.String())
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("subscriber said nothing for 10s")
		}
		return ""
	}
	if l := next(); l != "subscribed" {
		t.Fatalf("subscriber: %q", l)
	}
	if _, err := svc.Write(ctx, "v", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if l := next(); l != "notice" {
		t.Fatalf("before the reload: %q", l)
	}

	// Read on beta only: acme is withdrawn.
	if err := os.WriteFile(policyFile, []byte(strings.ReplaceAll(grant, `"acme"`, `"beta"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.b.ReloadPolicy(policyFile); err != nil {
		t.Fatal(err)
	}
	if l := next(); l != "ended PERMISSION_DENIED" {
		t.Fatalf("after the reload: %q, want the subscription ended with PERMISSION_DENIED", l)
	}
	h.stop(t)
	f, err := os.Open(filepath.Join(h.dataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := false
	broker.ReadAudit(f, func(r broker.Record) error {
		found = found || r.Event == broker.EventRevoked && r.ServiceID == "acme_orders" && r.UID != nil && *r.UID == testutil.Nobody &&
			r.Code == ipc.CodeOf(ipc.ErrPermissionDenied)
		return nil
	})
	if !found {
		t.Error("the revocation is not in the audit log")
	}
}
