package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

var fastBackoff = client.WithReconnect(client.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond})

// waitDisconnected waits until the client has noticed the broker went.
func waitDisconnected(t *testing.T, c *client.Client) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.Err() == nil; {
		if time.Now().After(deadline) {
			t.Fatal("client did not notice the broker going")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(c.Err(), client.ErrDisconnected) {
		t.Fatalf("Err: %v", c.Err())
	}
}

// TestReconnect restarts the broker on the same socket and data directory: a
// client with WithReconnect fails fast while it is away, then comes back with
// its Subscription (the same value) renewed, including a catch-up notice for
// what changed meanwhile, and its Mapping reading current values.
func TestReconnect(t *testing.T) {
	h := start(t, broker.Config{})
	c := h.dial(t, fastBackoff)
	ctx := ctxT(t)
	svc := service(t, c, "t", "rc", map[string][]byte{"x": []byte("x1"), "y": []byte("y1"), "z": []byte("z1")})
	sub, err := svc.Subscribe(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	m, err := svc.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	path := m.File().Path
	wc, err := svc.WorkingCopy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()

	h.stop(t)
	waitDisconnected(t, c)
	begin := time.Now()
	if _, _, err := svc.Read(ctx, "x"); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("read while away: %v", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("failing took %v", d)
	}
	if v, _, err := m.Read("x", nil); err != nil || string(v) != "x1" {
		t.Fatalf("mapped read while away: %q %v", v, err)
	}
	copy(wc.Bytes("z"), "zL")
	if _, err := wc.Sync(ctx); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("Sync while away: %v", err)
	}

	h.serve(t)
	// A change the client may miss while it is away: it comes as a catch-up
	// notice, or live if the client was back already.
	w := h.dial(t)
	svcW, err := w.Service(ctx, "t", "rc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svcW.Write(ctx, "x", []byte("x2")); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sub); !equal(got, map[string]uint64{"x": 2}) {
		t.Fatalf("after restart: %v", got)
	}
	// Live notices on the old Subscription.
	if _, err := svcW.Write(ctx, "y", []byte("y2")); err != nil {
		t.Fatal(err)
	}
	if _, err := svcW.Write(ctx, "x", []byte("x3")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sub); !equal(got, map[string]uint64{"x": 3}) {
		t.Fatalf("live after restart: %v", got)
	}
	for name, want := range map[string]string{"x": "x3", "y": "y2"} {
		if v, _, err := m.Read(name, nil); err != nil || string(v) != want {
			t.Fatalf("mapped %s = %q %v, want %q", name, v, err, want)
		}
	}
	if !m.Local() || m.File().Path != path {
		t.Fatalf("mapping local %v at %q, was %q", m.Local(), m.File().Path, path)
	}
	// The file outlived the broker: the mapping did not ask for it again.
	if st, err := w.Stats(ctx); err != nil || st.Requests["GetServiceFilePath"] != 0 {
		t.Fatalf("new broker: %d GetServiceFilePath, %v", st.Requests["GetServiceFilePath"], err)
	}
	if v, _, err := svc.Read(ctx, "x"); err != nil || string(v) != "x3" {
		t.Fatalf("socket read: %q %v", v, err)
	}
	// The edit that failed to sync is still dirty, and goes now.
	if sent, err := wc.Sync(ctx); err != nil || len(sent) != 1 || sent[0] != "z" {
		t.Fatalf("Sync after: %v %v", sent, err)
	}
	if v, _, err := m.Read("z", nil); err != nil || string(v) != "zL" {
		t.Fatalf("z = %q %v", v, err)
	}
	// A Subscription made after the restart joins the renewed one.
	sub2, err := svc.Subscribe(ctx, "y")
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	if _, err := svcW.Write(ctx, "y", []byte("y3")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sub2); !equal(got, map[string]uint64{"y": 3}) {
		t.Fatalf("new subscription: %v", got)
	}
	quiet(t, sub)
}

// TestReconnectMemfd: memfd services do not outlive the broker, so after a
// restart the Mapping falls back to the socket, which reports the service
// gone, and the Subscription says so and ends.
func TestReconnectMemfd(t *testing.T) {
	h := start(t, broker.Config{Backend: broker.BackendMemfd})
	c := h.dial(t, fastBackoff)
	ctx := ctxT(t)
	svc := service(t, c, "t", "gone", map[string][]byte{"x": []byte("x1")})
	sub, err := svc.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	m, err := svc.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.stop(t)
	waitDisconnected(t, c)
	h.serve(t)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sub); !equal(got, map[string]uint64{"x": 0}) {
		t.Fatalf("notice %v", got)
	}
	if _, err := sub.Next(ctx); !errors.Is(err, client.ErrServiceNotFound) {
		t.Fatalf("Next: %v", err)
	}
	if m.Local() {
		t.Fatal("mapping of a memfd that is gone still local")
	}
	if _, _, err := m.Read("x", nil); !errors.Is(err, client.ErrServiceNotFound) {
		t.Fatalf("read: %v", err)
	}
}

// TestReconnectBackoff: a client keeps trying while the broker stays away
// and Close stops it at once.
func TestReconnectBackoff(t *testing.T) {
	h := start(t, broker.Config{})
	c, err := client.Dial(ctxT(t), h.sock, client.WithReconnect(client.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Jitter: 1}))
	if err != nil {
		t.Fatal(err)
	}
	h.stop(t)
	waitDisconnected(t, c)
	time.Sleep(100 * time.Millisecond) // several attempts
	if err := c.Err(); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("Err: %v", err)
	}
	select {
	case <-c.Done():
		t.Fatal("client gave up")
	default:
	}
	begin := time.Now()
	c.Close()
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if !errors.Is(c.Err(), client.ErrClosed) {
		t.Fatalf("Err after Close: %v", c.Err())
	}
}

// startHangup serves a broker stand-in that answers Hello with Welcome and
// closes the connection at once, like a broker crash-looping or restarting.
func startHangup(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hangup.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			uc, err := l.AcceptUnix()
			if err != nil {
				return
			}
			conn, err := ipc.NewConn(uc, 0, false)
			if err != nil {
				uc.Close()
				continue
			}
			if body, err := conn.ReadFrame(); err == nil {
				if _, h, err := ipc.Decode(body); err == nil {
					frame, _ := ipc.EncodeFrame(&ipc.Welcome{Header: ipc.Header{ID: h.ID}, Protocol: ipc.ProtocolVersion, MaxFrame: ipc.DefaultMaxFrame})
					conn.WriteFrame(frame, nil)
				}
			}
			conn.ReleaseFDs()
			conn.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return sock
}

// TestReconnectHangup: a broker that closes every connection right after
// Welcome never makes the client panic (it published dead links and closed
// its up channel twice); Dial either fails with ErrDisconnected or returns a
// client that keeps trying.
func TestReconnectHangup(t *testing.T) {
	sock := startHangup(t)
	for i := 0; i < 20; i++ {
		c, err := client.Dial(ctxT(t), sock, client.WithReconnect(client.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond}))
		if err != nil {
			if !errors.Is(err, client.ErrDisconnected) {
				t.Fatalf("Dial: %v", err)
			}
			continue
		}
		time.Sleep(20 * time.Millisecond) // many reconnections
		select {
		case <-c.Done():
			t.Fatal("client with WithReconnect gave up")
		default:
		}
		c.Close()
	}
	// Without WithReconnect a dead link ends the client or fails Dial.
	for i := 0; i < 20; i++ {
		c, err := client.Dial(ctxT(t), sock)
		if err != nil {
			if !errors.Is(err, client.ErrDisconnected) {
				t.Fatalf("Dial: %v", err)
			}
			continue
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("client on a dead link not done")
		}
		c.Close()
	}
}

// mapped reports whether the file with inode ino is mapped into this process.
func mapped(t *testing.T, ino uint64) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// address perms offset dev inode path
		if f := strings.Fields(line); len(f) >= 5 && f[4] == strconv.FormatUint(ino, 10) {
			return true
		}
	}
	return false
}

// TestMappingRemap: the service file is replaced while the broker is away;
// after the reconnect the Mapping maps the new file, a Wait sleeping on the
// old file returns at once (nobody bumps the old word again), reads racing
// the remap see the old value or the new one and no error, and the old file
// is no longer mapped (not kept until Close).
func TestMappingRemap(t *testing.T) {
	h := start(t, broker.Config{})
	c := h.dial(t, fastBackoff)
	ctx := ctxT(t)
	service(t, c, "t", "rm", map[string][]byte{"x": []byte("old")})
	svc, err := c.Service(ctx, "t", "rm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := svc.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	path := m.File().Path
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	oldIno := fi.Sys().(*syscall.Stat_t).Ino

	type waited struct {
		seq uint32
		err error
	}
	done := make(chan waited, 1)
	wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seq := m.ChangeSeq()
	go func() {
		s, err := m.Wait(wctx, seq)
		done <- waited{s, err}
	}()

	// Readers keep reading through the remap: each read is the old value or
	// the new one, never an error, and never the old one after the new.
	var stopReads atomic.Bool
	var readers sync.WaitGroup
	readErr := make(chan error, 2)
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var buf []byte
			sawNew := false
			for !stopReads.Load() {
				v, _, err := m.Read("x", buf[:0])
				buf = v
				switch {
				case err != nil:
					readErr <- fmt.Errorf("read during the remap: %w", err)
					return
				case string(v) == "new":
					sawNew = true
				case string(v) != "old" || sawNew:
					readErr <- fmt.Errorf("read %q during the remap (new seen: %v)", v, sawNew)
					return
				}
			}
		}()
	}
	defer func() {
		stopReads.Store(true)
		readers.Wait()
		select {
		case err := <-readErr:
			t.Error(err)
		default:
		}
	}()

	h.stop(t)
	waitDisconnected(t, c)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f, err := shm.Create(path, "t", "rm", shm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Allocate("x", []byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	h.serve(t)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _, err := m.Read("x", nil); err != nil || string(v) != "new" {
		t.Fatalf("after the remap: %q %v", v, err)
	}
	select {
	case w := <-done:
		if w.err != nil {
			t.Fatalf("Wait across the remap: %v", w.err)
		}
		if w.seq != m.ChangeSeq() {
			t.Fatalf("Wait returned %d, the new file is at %d", w.seq, m.ChangeSeq())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait still asleep on the replaced file")
	}
	if mapped(t, oldIno) {
		t.Fatal("the replaced file is still mapped")
	}
}
