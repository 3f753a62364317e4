package broker_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/testutil"
)

// attackChild runs the attack COMMY_ATTACK against COMMY_SOCK with
// COMMY_N connections, prints one result line, then holds everything open
// until its stdin closes and prints a last line.
//
//	slowframe: Hello, then a 16 MiB length prefix and COMMY_BYTES of body,
//	           never the rest. Prints "sent N", then "closed K" once the
//	           broker has closed K of them.
//	slots:     Hello on every connection. Prints "welcome W refused R CODE".
func attackChild() int {
	sock := os.Getenv("COMMY_SOCK")
	n, _ := strconv.Atoi(os.Getenv("COMMY_N"))
	var conns []*ipc.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	hello := func() (*ipc.Conn, string, error) {
		c, err := ipc.Dial(sock, 0)
		if err != nil {
			return nil, "", err
		}
		var enc ipc.Encoder
		f, _ := enc.Frame(&ipc.Hello{Header: ipc.Header{ID: 1}, Protocol: ipc.ProtocolVersion, ClientName: "attacker"})
		c.WriteFrame(f, nil)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		body, err := c.ReadFrame()
		if err != nil {
			c.Close()
			return nil, "EOF", nil
		}
		m, _, err := ipc.Decode(body)
		if err != nil {
			c.Close()
			return nil, "", err
		}
		if e, ok := m.(*ipc.Error); ok {
			c.Close()
			return nil, e.ErrorCode, nil
		}
		return c, "", nil
	}
	switch os.Getenv("COMMY_ATTACK") {
	case "slowframe":
		size, _ := strconv.Atoi(os.Getenv("COMMY_BYTES"))
		part := binary.BigEndian.AppendUint32(nil, 16<<20)
		part = append(part, make([]byte, size)...)
		for i := 0; i < n; i++ {
			c, code, err := hello()
			if c == nil {
				fmt.Fprintln(os.Stderr, "hello:", code, err)
				return 2
			}
			conns = append(conns, c)
			c.WriteFrame(part, nil) // fails once the broker refused this connection more buffer
		}
		fmt.Println("sent", len(conns))
		var wg sync.WaitGroup
		var mu sync.Mutex
		closed := 0
		for _, c := range conns {
			wg.Go(func() {
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				for {
					if _, err := c.ReadFrame(); err != nil {
						if errors.Is(err, os.ErrDeadlineExceeded) {
							return // the broker kept it open
						}
						mu.Lock()
						closed++
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		fmt.Println("closed", closed)
	case "slots":
		welcome, refused, last := 0, 0, ""
		for i := 0; i < n; i++ {
			c, code, err := hello()
			switch {
			case err != nil:
				fmt.Fprintln(os.Stderr, "hello:", err)
				return 2
			case c != nil:
				conns = append(conns, c)
				welcome++
			default:
				refused++
				last = code
			}
		}
		fmt.Println("welcome", welcome, "refused", refused, last)
	case "garbage":
		for i := 0; i < n; i++ {
			c, err := ipc.Dial(sock, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, "dial:", err)
				return 2
			}
			c.WriteFrame([]byte{0, 0, 0, 0}, nil) // an empty frame: PROTOCOL_ERROR
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, err := c.ReadFrame(); err != nil {
					break
				}
			}
			c.Close()
		}
		fmt.Println("sent", n)
	default:
		fmt.Fprintln(os.Stderr, "unknown attack")
		return 2
	}
	io.Copy(io.Discard, os.Stdin)
	fmt.Println("done")
	return 0
}

// attacker is an attack child running as another uid.
type attacker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func startAttack(t *testing.T, h *harness, uid int, attack string, n int, env ...string) *attacker {
	t.Helper()
	testutil.RequireRoot(t)
	cmd := testutil.Child(t, "attack", uid, uid, append([]string{"COMMY_SOCK=" + h.sock, "COMMY_ATTACK=" + attack,
		"COMMY_N=" + strconv.Itoa(n)}, env...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &attacker{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(out)}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return a
}

// line returns the child's next output line.
func (a *attacker) line(t *testing.T) string {
	t.Helper()
	if !a.lines.Scan() {
		t.Fatalf("attack child ended: %v", a.lines.Err())
	}
	return a.lines.Text()
}

// usageOf is uid's account, or a zero one.
func usageOf(b *broker.Broker, uid uint32) broker.UserUsage {
	for _, u := range b.Users() {
		if u.UID == uid {
			return u
		}
	}
	return broker.UserUsage{UID: uid}
}

// served checks that root gets a prompt answer.
func served(t *testing.T, h *harness) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, h.sock)
	if err != nil {
		t.Fatalf("root cannot connect: %v", err)
	}
	defer c.Close()
	if _, err := c.Tenants(ctx); err != nil {
		t.Fatalf("root not served: %v", err)
	}
}

// TestAttackSlowFrames: a uid that starts frames it never finishes holds
// only what it sent, bounded by its buffered-bytes limit, and loses each
// connection once the frame timeout passes; root is served throughout.
func TestAttackSlowFrames(t *testing.T) {
	const conns, sent = 40, 256 << 10
	h := start(t, broker.Config{FrameTimeout: 3 * time.Second, MaxBufferedPerUID: 8 << 20})
	a := startAttack(t, h, testutil.Nobody, "slowframe", conns, "COMMY_BYTES="+strconv.Itoa(sent))
	if got := a.line(t); got != fmt.Sprint("sent ", conns) {
		t.Fatalf("child: %q", got)
	}
	served(t, h)
	deadline := time.Now().Add(2 * time.Second)
	var peak int64
	for time.Now().Before(deadline) {
		u := usageOf(h.b, testutil.Nobody)
		peak = max(peak, u.BufferedBytes)
		if u.BufferedBytes > 8<<20 {
			t.Fatalf("uid %d buffers %d bytes, past its 8 MiB limit", testutil.Nobody, u.BufferedBytes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// 40 x 256 KiB is 10 MiB: past the limit, so some connections were
	// refused more buffer; the rest hold about what arrived.
	if peak < 4<<20 {
		t.Fatalf("peak buffered %d: the frames did not arrive", peak)
	}
	u := usageOf(h.b, testutil.Nobody)
	if u.Refused["buffered_bytes"] == 0 {
		t.Fatalf("no refusal counted: %+v", u)
	}
	if got := a.line(t); got != fmt.Sprint("closed ", conns) {
		t.Fatalf("child: %q", got)
	}
	waitFor(t, "the attacker's connections to go", func() bool { return usageOf(h.b, testutil.Nobody).Connections == 0 })
	served(t, h)
}

// TestHelloLimits: Hello fields and the first frame have small maximum sizes.
func TestHelloLimits(t *testing.T) {
	h := start(t, broker.Config{})
	r := h.raw(t, false)
	if rep := r.do(&ipc.Hello{Protocol: 1, ClientName: strings.Repeat("n", broker.DefaultMaxClientName+1)}); code(rep) != "INVALID_REQUEST" {
		t.Fatalf("long client_name: %#v", rep)
	}
	r = h.raw(t, false)
	big := mustRawFrame(map[string]any{"type": "Hello", "id": 1, "protocol": 1, "client_name": strings.Repeat("n", 1<<20)})
	big = append(big, 0) // more than the broker reads
	conn, err := ipc.Dial(h.sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go conn.WriteFrame(big, nil)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	body, err := conn.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	m, _, _ := ipc.Decode(body)
	if code(m) != "FRAME_TOO_LARGE" {
		t.Fatalf("1 MiB Hello: %#v", m)
	}
	if rep := r.do(&ipc.Hello{Protocol: 1, ClientName: strings.Repeat("n", broker.DefaultMaxClientName)}); rep.Kind() != "Welcome" {
		t.Fatalf("client_name at the limit: %#v", rep)
	}
}

// TestIdleRule: with an idle timeout, a silent connection is dropped unless
// it holds a subscription.
func TestIdleRule(t *testing.T) {
	h := start(t, broker.Config{IdleTimeout: 300 * time.Millisecond})
	seedService(t, h, "t", "s")
	quiet := h.raw(t, true)
	sub := h.raw(t, true)
	if rep := sub.do(&ipc.Subscribe{ServiceID: "t_s"}); rep.Kind() != "Subscribed" {
		t.Fatalf("subscribe: %#v", rep)
	}
	time.Sleep(time.Second)
	quiet.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := quiet.conn.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection without subscription: %v, want EOF", err)
	}
	if rep := sub.do(&ipc.Heartbeat{}); rep.Kind() != "Heartbeat" {
		t.Fatalf("subscribed connection after idling: %#v", rep)
	}
}

// TestAttackConnectionSlots: one uid cannot take more than its share of
// connections, nor the ones kept for root; others still connect.
func TestAttackConnectionSlots(t *testing.T) {
	t.Run("per-uid", func(t *testing.T) {
		h := start(t, broker.Config{MaxConnectionsPerUID: 20})
		a := startAttack(t, h, testutil.Nobody, "slots", 30)
		if got := a.line(t); got != "welcome 20 refused 10 QUOTA_EXCEEDED" {
			t.Fatalf("child: %q", got)
		}
		other := startAttack(t, h, testutil.Nobody-1, "slots", 5)
		if got := other.line(t); got != "welcome 5 refused 0 " {
			t.Fatalf("second uid: %q", got)
		}
		served(t, h)
		if u := usageOf(h.b, testutil.Nobody); u.Connections != 20 || u.Refused["connections"] != 10 {
			t.Fatalf("usage: %+v", u)
		}
		// Stats and the metrics show it against the limit.
		found := false
		for _, l := range h.b.Stats().Limits {
			if l.Scope == "uid" && l.ID == fmt.Sprint(testutil.Nobody) && l.Limit == "connections" {
				found = l.Used == 20 && l.Max == 20 && l.Refused == 10
			}
		}
		if !found {
			t.Fatalf("Stats.Limits: %+v", h.b.Stats().Limits)
		}
		f := newScraper(t, h.b, false).scrape()
		if v := f.value("commy_uid_usage", fmt.Sprintf("limit=connections,uid=%d", testutil.Nobody)); v != 20 {
			t.Fatalf("commy_uid_usage %v", v)
		}
		if v := f.value("commy_uid_limit", "limit=connections"); v != 20 {
			t.Fatalf("commy_uid_limit %v", v)
		}
		if v := f.value("commy_quota_refusals_total", "limit=connections"); v != 10 {
			t.Fatalf("commy_quota_refusals_total %v", v)
		}
	})
	t.Run("root-reserve", func(t *testing.T) {
		h := start(t, broker.Config{MaxConnections: 40, ReservedConnections: 8, MaxConnectionsPerUID: 100})
		a := startAttack(t, h, testutil.Nobody, "slots", 40)
		if got := a.line(t); got != "welcome 32 refused 8 QUOTA_EXCEEDED" {
			t.Fatalf("child: %q", got)
		}
		for i := 0; i < 8; i++ {
			served(t, h) // one at a time; each closes after
		}
		// The broker frees a slot when it sees the close, not when the
		// client closes: wait for root's last connection to be gone.
		waitFor(t, "root's connections to end", func() bool { return usageOf(h.b, 0).Connections == 0 })
		var cs []*ipc.Conn
		for i := 0; i < 8; i++ {
			r := h.raw(t, true)
			cs = append(cs, r.conn)
		}
		if len(cs) != 8 {
			t.Fatal("root could not use the reserve")
		}
	})
}
