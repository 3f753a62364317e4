package client_test

import (
	"context"
	"errors"
	"fmt"
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
	testutil.Main(m, testutil.Children{"nomap": noMapChild, "stress-broker": stressBrokerChild, "stress-reader": stressReaderChild})
}

// harness is a broker serving on a real socket in a temporary directory.
type harness struct {
	cfg  broker.Config
	sock string

	mu   sync.Mutex
	b    *broker.Broker
	done chan error
}

func start(t testing.TB, cfg broker.Config) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "commy-client-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // other uids reach the socket
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(dir, "data")
	}
	h := &harness{cfg: cfg, sock: filepath.Join(dir, "s.sock")}
	h.serve(t)
	t.Cleanup(func() { h.stop(t) })
	return h
}

// serve starts a broker on the harness's socket and data directory.
func (h *harness) serve(t testing.TB) {
	t.Helper()
	b, err := broker.New(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := broker.Listen(h.sock, 0o666)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Serve(l) }()
	h.mu.Lock()
	h.b, h.done = b, done
	h.mu.Unlock()
}

// stop shuts the broker down gracefully; it does nothing if it is stopped.
func (h *harness) stop(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	b, done := h.b, h.done
	h.b = nil
	h.mu.Unlock()
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, broker.ErrClosed) {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return")
	}
}

func (h *harness) dial(t testing.TB, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, h.sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// service creates tenant t and a service in it holding vars (name: value).
func service(t testing.TB, c *client.Client, tenant, name string, vars map[string][]byte) *client.Service {
	t.Helper()
	ctx := context.Background()
	if err := c.CreateTenant(ctx, tenant); err != nil && !errors.Is(err, client.ErrAlreadyExists) {
		t.Fatal(err)
	}
	svc, err := c.CreateService(ctx, tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	for n, v := range vars {
		if _, err := svc.Allocate(ctx, n, v, 0); err != nil {
			t.Fatal(err)
		}
	}
	return svc
}

func varName(i int) string { return fmt.Sprintf("v%03d", i) }

// ctxT is a context bounded for one test step.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fake is a broker stand-in that answers Hello and hands every later request
// to its handler, for tests that need a broker that misbehaves.
type fake struct {
	sock  string
	l     *net.UnixListener
	accWG sync.WaitGroup // the accept loop
	wg    sync.WaitGroup // connections
	mu    sync.Mutex
	conns []*ipc.Conn
}

func startFake(t *testing.T, handle func(c *ipc.Conn, m ipc.Message)) *fake {
	t.Helper()
	f := &fake{sock: filepath.Join(t.TempDir(), "fake.sock")}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f.l = l
	f.accWG.Add(1)
	go func() {
		defer f.accWG.Done()
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
			f.mu.Lock()
			f.conns = append(f.conns, conn)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer conn.ReleaseFDs()
				defer conn.Close()
				for {
					body, err := conn.ReadFrame()
					if err != nil {
						return
					}
					m, h, err := ipc.Decode(body)
					if err != nil {
						return
					}
					if _, ok := m.(*ipc.Hello); ok {
						frame, _ := ipc.EncodeFrame(&ipc.Welcome{Header: ipc.Header{ID: h.ID}, Protocol: ipc.ProtocolVersion, MaxFrame: ipc.DefaultMaxFrame})
						conn.WriteFrame(frame, nil)
						continue
					}
					handle(conn, m)
				}
			}()
		}
	}()
	t.Cleanup(f.close)
	return f
}

// drop closes every accepted connection.
func (f *fake) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *fake) close() {
	f.l.Close()
	f.accWG.Wait()
	f.drop()
	f.wg.Wait()
}
