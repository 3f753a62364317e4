package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/brokertest"
	"github.com/commy/commy/internal/metrics"
	ucli "github.com/urfave/cli/v2"
)

// withMetricsFlags runs fn with a context parsed from the metrics flags.
func withMetricsFlags(t *testing.T, args []string, fn func(c *ucli.Context) error) error {
	t.Helper()
	app := &ucli.App{
		Name: "serve", Flags: metricsFlags(), Action: fn,
		Writer: io.Discard, ErrWriter: io.Discard, ExitErrHandler: func(*ucli.Context, error) {},
	}
	return app.Run(append([]string{"serve"}, args...))
}

func TestMetricsConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		usage   bool
		metrics bool
		tenants int
	}{
		{"off", nil, false, false, 0},
		{"tcp", []string{"--metrics-listen", "127.0.0.1:9090"}, false, true, broker.DefaultMetricsTenants},
		{"unix, 3 tenants", []string{"--metrics-listen", "unix:/x.sock", "--metrics-tenants", "3"}, false, true, 3},
		{"no tenant labels", []string{"--metrics-listen", "unix:/x.sock", "--metrics-tenants", "0"}, false, true, -1},
		{"negative tenants", []string{"--metrics-listen", "unix:/x.sock", "--metrics-tenants", "-2"}, true, false, 0},
		{"pprof alone", []string{"--pprof"}, true, false, 0},
		{"no port", []string{"--metrics-listen", "127.0.0.1"}, true, false, 0},
		{"no path", []string{"--metrics-listen", "unix:"}, true, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg broker.Config
			err := withMetricsFlags(t, c.args, func(ctx *ucli.Context) error { return metricsConfig(ctx, &cfg) })
			var ue usageError
			if errors.As(err, &ue) != c.usage || (!c.usage && err != nil) {
				t.Fatalf("metricsConfig(%q) = %v, want usage error %v", c.args, err, c.usage)
			}
			if cfg.Metrics != c.metrics || cfg.MetricsTenants != c.tenants {
				t.Fatalf("Metrics %v, MetricsTenants %d; want %v, %d", cfg.Metrics, cfg.MetricsTenants, c.metrics, c.tenants)
			}
		})
	}
}

// TestStartMetrics starts the metrics listener as serve does: it refuses
// addresses other hosts reach unless allowed, serves /metrics and pprof on
// a Unix socket, and stops cleanly.
func TestStartMetrics(t *testing.T) {
	b, _ := brokertest.Serve(t, broker.Config{Metrics: true})
	log := slog.New(slog.DiscardHandler)
	run := func(args ...string) (func() error, error) {
		var stop func() error
		err := withMetricsFlags(t, args, func(c *ucli.Context) error {
			var err error
			stop, err = startMetrics(c, b, log)
			return err
		})
		return stop, err
	}

	t.Run("off", func(t *testing.T) {
		stop, err := run()
		if err != nil || stop() != nil {
			t.Fatal(err)
		}
	})
	t.Run("pprof alone", func(t *testing.T) {
		var ue usageError
		if _, err := run("--pprof"); !errors.As(err, &ue) {
			t.Fatalf("--pprof without --metrics-listen: %v", err)
		}
	})
	t.Run("remote refused", func(t *testing.T) {
		for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
			if _, err := run("--metrics-listen", addr); !errors.Is(err, metrics.ErrNotLoopback) {
				t.Errorf("--metrics-listen %s: %v", addr, err)
			}
		}
	})
	t.Run("remote allowed", func(t *testing.T) {
		stop, err := run("--metrics-listen", "0.0.0.0:0", "--metrics-allow-remote")
		if err != nil {
			t.Fatal(err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("loopback", func(t *testing.T) {
		stop, err := run("--metrics-listen", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unix with pprof", func(t *testing.T) {
		sock := filepath.Join(shortDir(t), "m.sock")
		stop, err := run("--metrics-listen", "unix:"+sock, "--pprof")
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for path, want := range map[string]string{"/metrics": "commy_connections_open 0", "/debug/pprof/": "goroutine"} {
			resp, err := hc.Get("http://commy" + path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
				t.Errorf("GET %s: %s, %v; want %q in\n%s", path, resp.Status, err, want, body)
			}
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if err := stop(); err != nil {
			t.Fatalf("second stop: %v", err)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("metrics socket left behind: %v", err)
		}
	})
}

// TestStatsCommand: commy stats prints the broker's figures as a table and
// as JSON.
func TestStatsCommand(t *testing.T) {
	b, sock := brokertest.Serve(t, broker.Config{})
	if err := b.ReloadPolicy(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Fatal("reloaded a missing policy")
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"commy", "--socket", sock, "create", "t"}, &out, &errOut); code != 0 {
		t.Fatalf("create: %d %s", code, errOut.String())
	}
	if code := run([]string{"commy", "--socket", sock, "create", "t"}, &out, &errOut); code != ExitConflict {
		t.Fatalf("create again: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"commy", "--socket", sock, "stats", "--bytes"}, &out, &errOut); code != 0 {
		t.Fatalf("stats: %d %s", code, errOut.String())
	}
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 2 {
			rows[f[0]] = f[1]
		}
	}
	for k, want := range map[string]string{
		"connections_total": "3", "connections_rejected": "0", "tenants": "1",
		"policy_reloads": "0", "policy_reload_errors": "1",
		"requests.Hello": "3", "requests.CreateTenant": "2", "requests.CreateTenant.ALREADY_EXISTS": "1",
		"errors.ALREADY_EXISTS": "1", "audit_events.connect": "3", "audit_events.admin": "1",
	} {
		if rows[k] != want {
			t.Errorf("%s = %q, want %q", k, rows[k], want)
		}
	}
	for _, k := range []string{"bytes_in", "bytes_out"} {
		if rows[k] == "" || rows[k] == "0" {
			t.Errorf("%s = %q, want a count", k, rows[k])
		}
	}

	out.Reset()
	if code := run([]string{"commy", "--socket", sock, "stats", "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("stats --json: %d %s", code, errOut.String())
	}
	var st client.Stats
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.BytesIn == 0 || st.PolicyReloadErrors != 1 || st.RequestErrors["CreateTenant"]["ALREADY_EXISTS"] != 1 || st.AuditEvents["connect"] != 4 {
		t.Fatalf("stats --json: %+v", st)
	}
}

// TestReadSpinFlag: --read-spin reaches broker.Config, and 0 turns the spin
// off rather than asking for the default.
func TestReadSpinFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{nil, broker.DefaultReadSpin},
		{[]string{"--read-spin", "20us"}, 20 * time.Microsecond},
		{[]string{"--read-spin", "0"}, -1},
	} {
		var got time.Duration
		app := &ucli.App{
			Name: "serve", Flags: []ucli.Flag{readSpinFlag()},
			Action: func(ctx *ucli.Context) error { got = readSpin(ctx); return nil },
			Writer: io.Discard, ErrWriter: io.Discard, ExitErrHandler: func(*ucli.Context, error) {},
		}
		if err := app.Run(append([]string{"serve"}, c.args...)); err != nil || got != c.want {
			t.Fatalf("%q: ReadSpin %v (%v), want %v", c.args, got, err, c.want)
		}
	}
}
