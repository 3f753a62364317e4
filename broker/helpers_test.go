package broker_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m, children)
}

// harness is a broker serving on a real socket in a temporary directory.
type harness struct {
	b       *broker.Broker
	sock    string
	dataDir string
	done    chan error
	once    sync.Once
}

func start(t *testing.T, cfg broker.Config) *harness { return startTB(t, cfg) }

func startTB(t testing.TB, cfg broker.Config) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "commy-t")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // other uids reach the socket
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(dir, "data")
	}
	return startIn(t, cfg, filepath.Join(dir, "s.sock"))
}

func startIn(t testing.TB, cfg broker.Config, sock string) *harness {
	t.Helper()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := broker.Listen(sock, 0o666)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	h := &harness{b: b, sock: sock, dataDir: cfg.DataDir, done: make(chan error, 1)}
	go func() { h.done <- b.Serve(l) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t testing.TB) {
	h.once.Do(func() { h.shutdown(t) })
}

func (h *harness) shutdown(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.b.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return")
	}
}

func (h *harness) dial(t testing.TB) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, h.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raw is a connection that speaks frames directly, for exact wire tests.
type raw struct {
	t    testing.TB
	conn *ipc.Conn
	enc  ipc.Encoder
	id   uint64
}

func (h *harness) raw(t testing.TB, hello bool) *raw {
	t.Helper()
	conn, err := ipc.Dial(h.sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); conn.ReleaseFDs() })
	r := &raw{t: t, conn: conn}
	if hello {
		if w := r.do(&ipc.Hello{Protocol: 1}); w.Kind() != "Welcome" {
			t.Fatalf("hello: %#v", w)
		}
	}
	return r
}

func (r *raw) send(m ipc.Message) uint64 {
	r.t.Helper()
	if m.Hdr().ID == 0 {
		r.id++
		m.Hdr().ID = r.id
	}
	f, err := r.enc.Frame(m)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.conn.WriteFrame(f, nil); err != nil {
		r.t.Fatal(err)
	}
	return m.Hdr().ID
}

func (r *raw) recv() ipc.Message {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	body, err := r.conn.ReadFrame()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	m, _, err := ipc.Decode(body)
	if err != nil {
		r.t.Fatalf("decode: %v", err)
	}
	return m
}

// do sends m and returns the reply with its id, skipping pushes.
func (r *raw) do(m ipc.Message) ipc.Message {
	r.t.Helper()
	id := r.send(m)
	for {
		rep := r.recv()
		if rep.Hdr().ID == id {
			return rep
		}
		if rep.Hdr().ID != 0 {
			r.t.Fatalf("reply id %d, want %d", rep.Hdr().ID, id)
		}
	}
}

// code returns the error code of an Error reply, or "" for any other reply.
func code(m ipc.Message) string {
	if e, ok := m.(*ipc.Error); ok {
		return e.ErrorCode
	}
	return ""
}

func rawWrite(t *testing.T, sock string, data []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	return c
}
