package metrics_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/internal/metrics"
	"github.com/commy/commy/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }

func TestParseAddress(t *testing.T) {
	for _, c := range []struct {
		addr, network, address string
		err                    error
	}{
		{"127.0.0.1:9090", "tcp", "127.0.0.1:9090", nil},
		{"localhost:0", "tcp", "localhost:0", nil},
		{"[::1]:9090", "tcp", "[::1]:9090", nil},
		{":9090", "tcp", ":9090", nil},
		{"unix:/run/commy/metrics.sock", "unix", "/run/commy/metrics.sock", nil},
		{"unix:", "", "", metrics.ErrAddress},
		{"127.0.0.1", "", "", metrics.ErrAddress},
		{"", "", "", metrics.ErrAddress},
	} {
		t.Run(c.addr, func(t *testing.T) {
			n, a, err := metrics.ParseAddress(c.addr)
			if !errors.Is(err, c.err) || n != c.network || a != c.address {
				t.Fatalf("ParseAddress(%q) = %q, %q, %v; want %q, %q, %v", c.addr, n, a, err, c.network, c.address, c.err)
			}
		})
	}
}

// TestListenTCP: loopback addresses are accepted; every interface and
// other hosts' addresses only with AllowRemote.
func TestListenTCP(t *testing.T) {
	for _, c := range []struct {
		addr        string
		allowRemote bool
		err         error
	}{
		{"127.0.0.1:0", false, nil},
		{"127.0.0.2:0", false, nil},
		{"localhost:0", false, nil},
		{"[::1]:0", false, nil},
		{"[::ffff:127.0.0.1]:0", false, nil},
		{"0.0.0.0:0", false, metrics.ErrNotLoopback},
		{":0", false, metrics.ErrNotLoopback},
		{"[::]:0", false, metrics.ErrNotLoopback},
		{"192.0.2.1:0", false, metrics.ErrNotLoopback}, // TEST-NET-1: refused before any bind
		{"0.0.0.0:0", true, nil},
		{":0", true, nil},
	} {
		t.Run(c.addr+map[bool]string{true: ",remote", false: ""}[c.allowRemote], func(t *testing.T) {
			l, err := metrics.ListenConfig{AllowRemote: c.allowRemote}.Listen(t.Context(), c.addr)
			if c.addr == "[::1]:0" && errors.Is(err, syscall.EADDRNOTAVAIL) {
				t.Skipf("no IPv6 loopback: %v", err)
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("Listen(%q) = %v, want %v", c.addr, err, c.err)
			}
			if err != nil {
				return
			}
			defer l.Close()
			ip := l.Addr().(*net.TCPAddr).IP
			if !c.allowRemote && !ip.IsLoopback() {
				t.Errorf("listening on %v", l.Addr())
			}
		})
	}
}

// TestListenUnix: the socket gets its mode, replaces a stale socket, refuses
// a live one and goes away when closed.
func TestListenUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "m.sock")
	l, err := metrics.ListenConfig{}.Listen(t.Context(), "unix:"+path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != metrics.DefaultSocketMode {
		t.Fatalf("socket: %v, %v", fi.Mode(), err)
	}
	if _, err := (metrics.ListenConfig{}).Listen(t.Context(), "unix:"+path); !errors.Is(err, metrics.ErrInUse) {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	// A socket left behind by a process that died.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = metrics.ListenConfig{SocketMode: 0o600}.Listen(t.Context(), "unix:"+path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v", fi.Mode(), err)
	}
	l.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (metrics.ListenConfig{}).Listen(t.Context(), "unix:"+file); err == nil {
		t.Fatal("listened over a regular file")
	}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestServer serves on loopback TCP: /metrics has the collector's metrics
// and the build's, pprof answers only when enabled, and Close and Shutdown
// may be called in any order, more than once.
func TestServer(t *testing.T) {
	for _, pprof := range []bool{false, true} {
		t.Run(map[bool]string{false: "pprof off", true: "pprof on"}[pprof], func(t *testing.T) {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "commy_test_gauge", Help: "A test gauge."})
			g.Set(42)
			srv, err := metrics.New(metrics.Config{Collector: g, Version: "9.9.9", Pprof: pprof})
			if err != nil {
				t.Fatal(err)
			}
			l, err := metrics.ListenConfig{}.Listen(t.Context(), "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(l) }()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			base := "http://" + l.Addr().String()

			code, body := get(t, c, base+"/metrics")
			if code != http.StatusOK || !strings.Contains(body, "commy_test_gauge 42\n") ||
				!strings.Contains(body, `commy_build_info{goversion="`) || !strings.Contains(body, `version="9.9.9"} 1`) {
				t.Fatalf("GET /metrics: %d\n%s", code, body)
			}
			want := http.StatusNotFound
			if pprof {
				want = http.StatusOK
			}
			for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/symbol"} {
				if code, _ := get(t, c, base+p); code != want {
					t.Errorf("GET %s: %d, want %d", p, code, want)
				}
			}
			if code, _ := get(t, c, base+"/nothing"); code != http.StatusNotFound {
				t.Errorf("GET /nothing: %d", code)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-served; !errors.Is(err, metrics.ErrClosed) {
				t.Fatalf("Serve returned %v", err)
			}
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(base + "/metrics"); err == nil {
				t.Fatal("served after Close")
			}
		})
	}
}

// TestStart: Close ends the goroutine Start began, and closes the
// connections being served.
func TestStart(t *testing.T) {
	srv, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := metrics.ListenConfig{}.Listen(t.Context(), "unix:"+filepath.Join(t.TempDir(), "m.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start(l)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", l.Addr().String())
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	if code, body := get(t, c, "http://commy/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}
