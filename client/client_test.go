package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
)

// TestConcurrentRequests runs 64 goroutines of mixed requests on one Client:
// every reply must reach its own caller, so each goroutine's writes and
// reads of its variable see exactly its own values and versions.
func TestConcurrentRequests(t *testing.T) {
	h := start(t, broker.Config{})
	c := h.dial(t)
	const workers, rounds = 64, 25
	vars := map[string][]byte{}
	for g := 0; g < workers; g++ {
		vars[varName(g)] = []byte("init")
	}
	svc := service(t, c, "t", "conc", vars)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := varName(g)
			want := uint64(1)
			for i := 0; i < rounds; i++ {
				// Values grow, so some writes move the variable.
				val := []byte(fmt.Sprintf("%s/%d/%s", name, i, strings.Repeat("x", g*i)))
				v, err := svc.Write(ctx, name, val)
				if err != nil {
					errs <- err
					return
				}
				if want++; v != want {
					errs <- fmt.Errorf("%s: write %d: version %d, want %d", name, i, v, want)
					return
				}
				got, v, err := svc.Read(ctx, name)
				if err != nil || v != want || !bytes.Equal(got, val) {
					errs <- fmt.Errorf("%s: read %d: %q v%d %v, want %q v%d", name, i, got, v, err, val, want)
					return
				}
				switch i % 3 {
				case 0:
					if _, err := c.Heartbeat(ctx); err != nil {
						errs <- err
						return
					}
				case 1:
					vs, err := svc.Variables(ctx)
					if err != nil || len(vs) != workers {
						errs <- fmt.Errorf("variables: %d, %v", len(vs), err)
						return
					}
				case 2:
					other := varName((g + 1) % workers)
					if b, _, err := svc.Read(ctx, other); err != nil || !bytes.HasPrefix(b, []byte(other)) && string(b) != "init" {
						errs <- fmt.Errorf("read %s: %q %v", other, b, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTypedErrors(t *testing.T) {
	sentinels := map[string]error{
		"PROTOCOL_ERROR": client.ErrProtocol, "UNKNOWN_MESSAGE": client.ErrUnknownMessage,
		"INVALID_REQUEST": client.ErrInvalidRequest, "INVALID_NAME": client.ErrInvalidName,
		"INVALID_SERVICE_ID": client.ErrInvalidServiceID, "FRAME_TOO_LARGE": client.ErrFrameTooLarge,
		"PERMISSION_DENIED": client.ErrPermissionDenied, "HYBRID_ACCESS_DENIED": client.ErrHybridAccessDenied,
		"TENANT_NOT_FOUND": client.ErrTenantNotFound, "SERVICE_NOT_FOUND": client.ErrServiceNotFound,
		"VARIABLE_NOT_FOUND": client.ErrVariableNotFound, "FILE_NOT_FOUND": client.ErrFileNotFound,
		"ALREADY_EXISTS": client.ErrAlreadyExists, "VALUE_TOO_LARGE": client.ErrValueTooLarge,
		"NO_SPACE": client.ErrNoSpace, "QUOTA_EXCEEDED": client.ErrQuotaExceeded, "INTERNAL_ERROR": client.ErrInternal,
		"SERVICE_DAMAGED": client.ErrServiceDamaged,
	}
	for _, code := range ipc.Codes() {
		want, ok := sentinels[code]
		if !ok {
			t.Errorf("no client sentinel for %s", code)
			continue
		}
		var err error = &client.Error{Code: code, Message: "m"}
		if !errors.Is(fmt.Errorf("wrapped: %w", err), want) {
			t.Errorf("%s does not match its sentinel", code)
		}
		for other, s := range sentinels {
			if other != code && errors.Is(err, s) {
				t.Errorf("%s matches the sentinel of %s", code, other)
			}
		}
	}

	h := start(t, broker.Config{})
	c := h.dial(t)
	ctx := ctxT(t)
	svc := service(t, c, "t", "errs", map[string][]byte{"v": []byte("x")})
	_, err := c.Service(ctx, "t", "nope")
	var e *client.Error
	if !errors.Is(err, client.ErrServiceNotFound) || !errors.As(err, &e) || e.Code != "SERVICE_NOT_FOUND" {
		t.Errorf("missing service: %v", err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"variable not found", func() error { _, _, err := svc.Read(ctx, "nope"); return err }(), client.ErrVariableNotFound},
		{"already exists", func() error { _, err := svc.Allocate(ctx, "v", nil, 0); return err }(), client.ErrAlreadyExists},
		{"invalid name", func() error { _, err := svc.Allocate(ctx, "a/b", nil, 0); return err }(), client.ErrInvalidName},
		{"tenant not found", func() error { _, err := c.Services(ctx, "nope"); return err }(), client.ErrTenantNotFound},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v", tc.name, tc.err)
		}
	}
}

// TestContext checks that a request returns when its context is cancelled
// or its deadline passes, against a broker that never replies.
func TestContext(t *testing.T) {
	f := startFake(t, func(*ipc.Conn, ipc.Message) {})
	c, err := client.Dial(ctxT(t), f.sock, client.WithTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancelled before", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"WithTimeout", func() (context.Context, context.CancelFunc) {
			return context.Background(), func() {}
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			begin := time.Now()
			_, err := c.Heartbeat(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if d := time.Since(begin); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
	if c.Err() != nil {
		t.Fatalf("cancelled requests broke the connection: %v", c.Err())
	}
}

// TestBlockedWrite: a request whose frame cannot be written, because the
// broker stopped reading, returns when its context is cancelled; the
// half-written frame costs the connection.
func TestBlockedWrite(t *testing.T) {
	release, blocked := make(chan struct{}), make(chan struct{}, 1)
	f := startFake(t, func(c *ipc.Conn, m ipc.Message) {
		if g, ok := m.(*ipc.GetService); ok {
			frame, _ := ipc.EncodeFrame(&ipc.Service{Header: ipc.Header{ID: g.ID}, ServiceID: "t_s", TenantID: "t", ServiceName: "s"})
			c.WriteFrame(frame, nil)
			return
		}
		if _, ok := m.(*ipc.Heartbeat); ok {
			blocked <- struct{}{}
			<-release // stop reading
		}
	})
	t.Cleanup(func() { close(release) })
	c, err := client.Dial(ctxT(t), f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc, err := c.Service(ctxT(t), "t", "s")
	if err != nil {
		t.Fatal(err)
	}
	hb := make(chan error, 1)
	go func() {
		_, err := c.Heartbeat(context.Background())
		hb <- err
	}()
	<-blocked
	// Cancel once the frame is surely encoded and its write blocked.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(500*time.Millisecond, cancel)
	begin := time.Now()
	if _, err := svc.Write(ctx, "v", make([]byte, 2<<20)); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection with a partial frame kept")
	}
	if err := <-hb; !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("request waiting meanwhile: %v", err)
	}
	if _, err := c.Heartbeat(ctxT(t)); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("after: %v", err)
	}
}

func TestClose(t *testing.T) {
	h := start(t, broker.Config{})
	c := h.dial(t)
	ctx := ctxT(t)
	svc := service(t, c, "t", "close", map[string][]byte{"v": []byte("x")})
	sub, err := svc.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed")
	}
	if _, _, err := svc.Read(ctx, "v"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	if _, err := c.Heartbeat(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("heartbeat after Close: %v", err)
	}
	if _, err := svc.Subscribe(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("subscribe after Close: %v", err)
	}
	if _, err := sub.Next(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("subscription Close after client Close: %v", err)
	}
	if !errors.Is(c.Err(), client.ErrClosed) || !errors.Is(c.WaitConnected(ctx), client.ErrClosed) {
		t.Errorf("Err %v", c.Err())
	}
}

// TestInFlight: a request waiting for its reply when the connection goes
// fails with ErrDisconnected, with or without reconnection.
func TestInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []client.Option
	}{
		{"plain", nil},
		{"reconnect", []client.Option{client.WithReconnect(client.Backoff{Initial: 10 * time.Millisecond})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f *fake
			got := make(chan struct{}, 1)
			f = startFake(t, func(*ipc.Conn, ipc.Message) {
				got <- struct{}{}
			})
			c, err := client.Dial(ctxT(t), f.sock, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			errc := make(chan error, 1)
			go func() {
				_, err := c.Heartbeat(context.Background())
				errc <- err
			}()
			<-got
			f.drop()
			select {
			case err := <-errc:
				if !errors.Is(err, client.ErrDisconnected) {
					t.Fatalf("got %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("in-flight request hangs")
			}
			if tc.opts == nil {
				<-c.Done()
				if !errors.Is(c.Err(), client.ErrDisconnected) {
					t.Fatalf("Err: %v", c.Err())
				}
				return
			}
			if err := c.WaitConnected(ctxT(t)); err != nil {
				t.Fatalf("no reconnect: %v", err)
			}
		})
	}
}

// TestFrameTooLarge: a request over the broker's frame limit fails before it
// is sent, and the connection stays usable.
func TestFrameTooLarge(t *testing.T) {
	h := start(t, broker.Config{MaxFrame: 64 << 10})
	c := h.dial(t)
	ctx := ctxT(t)
	svc := service(t, c, "t", "big", map[string][]byte{"v": nil})
	if _, err := svc.Write(ctx, "v", make([]byte, 100<<10)); !errors.Is(err, client.ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
	if _, err := svc.Write(ctx, "v", make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}
}
