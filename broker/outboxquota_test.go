package broker_test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/testutil"
)

// stallChild opens COMMY_CONNS connections to COMMY_SOCK, subscribes each to
// COMMY_SERVICE_ID, prints "subscribed", then reads nothing until its stdin
// closes.
func stallChild() int {
	n, _ := strconv.Atoi(os.Getenv("COMMY_CONNS"))
	var conns []*ipc.Conn
	for range n {
		conn, err := ipc.Dial(os.Getenv("COMMY_SOCK"), 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		conns = append(conns, conn)
		for i, m := range []map[string]any{
			{"type": "Hello", "protocol": 1},
			{"type": "Subscribe", "service_id": os.Getenv("COMMY_SERVICE_ID")},
		} {
			m["id"] = uint64(i + 1)
			if err := conn.WriteFrame(mustRawFrame(m), nil); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			body, err := conn.ReadFrame()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			if m, _, err := ipc.Decode(body); err != nil || m.Kind() == "Error" {
				fmt.Fprintln(os.Stderr, "reply", m, err)
				return 2
			}
		}
	}
	fmt.Println("subscribed")
	bufio.NewReader(os.Stdin).ReadString('\n')
	for _, c := range conns {
		c.Close()
	}
	return 0
}

// bufferedOf is uid's buffered bytes and its limit, as Stats lists them.
func bufferedOf(t *testing.T, c *client.Client, uid int) (used, max int64, refused uint64) {
	return limitOf(t, c, uid, "buffered_bytes")
}

// limitOf is uid's use of limit, as Stats lists it.
func limitOf(t *testing.T, c *client.Client, uid int, limit string) (used, max int64, refused uint64) {
	t.Helper()
	st, err := c.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Limits {
		if l.Scope == "uid" && l.ID == strconv.Itoa(uid) && l.Limit == limit {
			return l.Used, l.Max, l.Refused
		}
	}
	return 0, 0, 0
}

// TestAttackStalledSubscribers: a second uid subscribes many connections
// that never read while root reports large changes. What waits in their
// outboxes is charged to the uid, which stays within its limit: past it
// subscribers are disconnected (the uid's refusals count it), root is served
// throughout, and everything charged is given back when the uid goes.
func TestAttackStalledSubscribers(t *testing.T) {
	testutil.RequireRoot(t)
	const (
		conns  = 8
		vars   = 200
		limit  = 128 << 10
		rounds = 20
	)
	grant := "[[grant]]\nusers = [65534]\ntenants = [\"acme\"]\nrights = [\"read\"]\n"
	h := start(t, broker.Config{Policy: mustPolicy(t, grant), MaxBufferedPerUID: limit, WriteTimeout: time.Minute})
	c := h.dial(t)
	ctx := t.Context()
	if err := c.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	svc, err := c.CreateService(ctx, "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	values := make([]client.NamedValue, vars)
	for i := range values {
		values[i].Name = fmt.Sprintf("v%03d_%s", i, strings.Repeat("x", 90))
		values[i].Value = []byte("0")
		if _, err := svc.Allocate(ctx, values[i].Name, values[i].Value, 16); err != nil {
			t.Fatal(err)
		}
	}
	cmd := testutil.Child(t, "stall", testutil.Nobody, testutil.Nobody, "COMMY_SOCK="+h.sock,
		"COMMY_SERVICE_ID=acme_orders", fmt.Sprintf("COMMY_CONNS=%d", conns))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "subscribed\n" {
		t.Fatalf("stall child said %q: %s", line, stderr.String())
	}
	var peak int64
	for r := range rounds {
		for i := range values {
			values[i].Value = []byte(strconv.Itoa(r))
		}
		if err := svc.Report(ctx, values); err != nil {
			t.Fatalf("round %d: root's report: %v", r, err)
		}
		used, lim, _ := bufferedOf(t, c, testutil.Nobody)
		if lim != limit || used > lim {
			t.Fatalf("round %d: uid %d buffers %d bytes, limit %d (want %d)", r, testutil.Nobody, used, lim, limit)
		}
		peak = max(peak, used)
	}
	_, _, refused := bufferedOf(t, c, testutil.Nobody)
	if refused == 0 || peak == 0 {
		t.Fatalf("uid %d: peak %d bytes buffered, %d refusals: its stalled notices were not charged", testutil.Nobody, peak, refused)
	}
	// The subscribers over the limit were disconnected.
	for deadline := time.Now().Add(10 * time.Second); ; {
		left, _, _ := limitOf(t, c, testutil.Nobody, "connections")
		if left < conns {
			t.Logf("uid %d: peak %d bytes buffered, %d refusals, %d of %d subscribers left", testutil.Nobody, peak, refused, left, conns)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uid %d: all %d subscribers still connected past its limit", testutil.Nobody, conns)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stall child: %v: %s", err, stderr.String())
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		used, _, _ := bufferedOf(t, c, testutil.Nobody)
		if used == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uid %d still holds %d buffered bytes after its connections ended", testutil.Nobody, used)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
