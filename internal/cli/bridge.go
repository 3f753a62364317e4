package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/commy/commy/internal/bridge"
	"github.com/commy/commy/internal/metrics"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	ucli "github.com/urfave/cli/v2"
)

// statusSocket is where a running bridge answers `commy bridge status`, in
// its state directory.
const statusSocket = "status.sock"

func bridgeCommand() *ucli.Command {
	// Not Required: urfave/cli would then ask it of `bridge status` and
	// `bridge nats` too, before they run.
	configFlag := &ucli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "bridge TOML `FILE` (see docs/federation.md)", EnvVars: []string{"COMMY_BRIDGE_CONFIG"}}
	return &ucli.Command{
		Name:  "bridge",
		Usage: "mirror chosen services across hosts through NATS JetStream",
		Description: "Runs beside the local broker as one of its clients and mirrors the services the config names\n" +
			"through a JetStream stream, until SIGINT or SIGTERM. Under systemd it reports readiness (once caught\n" +
			"up with the stream) and status through NOTIFY_SOCKET. `commy bridge status` asks a running bridge.",
		Flags: []ucli.Flag{
			configFlag,
			&ucli.BoolFlag{Name: "resync", Usage: "ignore the saved position: replay the stream, then publish the local values that differ"},
			&ucli.IntFlag{Name: "procs", Usage: "run the bridge's goroutines on at most `N` CPUs at once (default: $GOMAXPROCS if set, else 1)"},
			&ucli.StringFlag{Name: "metrics-listen", Usage: "serve Prometheus metrics at /metrics and the status at /status on `ADDR`: a loopback HOST:PORT, or unix:PATH (default: off)"},
			&ucli.BoolFlag{Name: "metrics-allow-remote", Usage: "let --metrics-listen take an address other hosts can reach"},
			&ucli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&ucli.StringFlag{Name: "log-format", Value: "auto", Usage: "text, json, or auto (json under systemd)"},
		},
		Action: runBridge,
		Subcommands: []*ucli.Command{
			{
				Name:   "status",
				Usage:  "show what a running bridge is doing",
				Flags:  []ucli.Flag{configFlag, &ucli.BoolFlag{Name: "json", Usage: "print the status as JSON"}},
				Action: bridgeStatus,
			},
			{
				Name:  "nats",
				Usage: "run a single-node NATS server with JetStream, for trying the bridge on one machine",
				Description: "A development server: one node, no authentication, file storage in --store. Production\n" +
					"uses a NATS cluster of its own (three nodes or more).",
				Flags: []ucli.Flag{
					&ucli.StringFlag{Name: "listen", Value: "127.0.0.1:4222", Usage: "client `HOST:PORT` (loopback unless --allow-remote)"},
					&ucli.StringFlag{Name: "store", Required: true, Usage: "JetStream storage `DIR`"},
					&ucli.BoolFlag{Name: "allow-remote", Usage: "let --listen take an address other hosts can reach"},
					&ucli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
					&ucli.StringFlag{Name: "log-format", Value: "auto", Usage: "text, json, or auto (json under systemd)"},
				},
				Action: bridgeNATS,
			},
		},
	}
}

// loadBridgeConfig reads --config; a config without a socket takes the
// command line's.
func loadBridgeConfig(c *ucli.Context) (bridge.Config, error) {
	if c.String("config") == "" {
		return bridge.Config{}, usagef("--config FILE is required; see docs/federation.md")
	}
	cfg, err := bridge.LoadConfig(c.String("config"))
	if err != nil {
		return cfg, usagef("--config: %v", err)
	}
	if cfg.Socket == "" {
		if cfg.Socket, err = socketOf(c); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

func runBridge(c *ucli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	cfg, err := loadBridgeConfig(c)
	if err != nil {
		return err
	}
	// One CPU by default: a bridge has one batch in flight to JetStream and
	// applies one message at a time, a few microseconds of work each, and
	// the runtime's idle threads on a second CPU only add wake-ups: on two
	// vCPUs one fewer cut the bridges' context switches per federated write
	// by a third (latency moved within the runs' spread).
	procs, err := procsOf(c, 1)
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(procs)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	br, err := bridge.New(ctx, cfg, bridge.Options{Logger: log, Resync: c.Bool("resync")})
	cancel()
	if err != nil {
		return err
	}
	defer br.Close()

	stop, err := serveBridgeStatus(c, br, cfg, log)
	if err != nil {
		return err
	}
	defer stop()

	n := &notifier{log: log}
	log.Info("commy bridge running", "host_id", cfg.HostID, "socket", cfg.Socket, "nats", cfg.NATS.URLs,
		"stream", cfg.JetStream.Stream, "state_dir", cfg.StateDir, "procs", runtime.GOMAXPROCS(0), "version", versionString(), "pid", os.Getpid())
	tick := time.NewTicker(statusInterval)
	defer tick.Stop()
	ready := br.Ready()
	for {
		select {
		case <-ready:
			ready = nil
			n.notify(daemon.SdNotifyReady + "\n" + bridgeStatusLine(br.Status()))
		case <-tick.C:
			n.notify(bridgeStatusLine(br.Status()))
		case <-br.Done():
			n.notify(daemon.SdNotifyStopping)
			return br.Err()
		case sig := <-sigs:
			log.Info("shutting down", "signal", sig.String())
			n.notify(daemon.SdNotifyStopping + "\nSTATUS=shutting down")
			if err := br.Close(); err != nil {
				return err
			}
			log.Info("stopped")
			return nil
		}
	}
}

// bridgeStatusLine is a STATUS= assignment for systemd.
func bridgeStatusLine(s bridge.Status) string {
	return fmt.Sprintf("STATUS=nats %s, %d services, applied up to %d, %d batches pending",
		strings.ToLower(s.NATS), len(s.Services), s.AppliedSeq, s.PendingBatches)
}

// serveBridgeStatus answers on the status socket in the state directory
// and, with --metrics-listen, there too. stop closes both.
func serveBridgeStatus(c *ucli.Context, br *bridge.Bridge, cfg bridge.Config, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{br, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, MaxRequestsInFlight: 4, Timeout: 30 * time.Second}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(br.Status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	var ls []net.Listener
	closeAll := func() {
		for _, l := range ls {
			l.Close()
		}
	}
	sl, err := metrics.ListenConfig{SocketMode: 0o600}.Listen(c.Context, "unix:"+filepath.Join(cfg.StateDir, statusSocket))
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	ls = append(ls, sl)
	if addr := c.String("metrics-listen"); addr != "" {
		ml, err := metrics.ListenConfig{AllowRemote: c.Bool("metrics-allow-remote")}.Listen(c.Context, addr)
		if err != nil {
			closeAll()
			if errors.Is(err, metrics.ErrNotLoopback) {
				return nil, fmt.Errorf("--metrics-listen: %w (--metrics-allow-remote allows it)", err)
			}
			return nil, fmt.Errorf("--metrics-listen: %w", err)
		}
		ls = append(ls, ml)
		log.Info("metrics serving", "addr", ml.Addr().String())
	}
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Serve(l)
		}()
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		wg.Wait()
	}, nil
}

func bridgeStatus(c *ucli.Context) error {
	cfg, err := loadBridgeConfig(c)
	if err != nil {
		return err
	}
	path := filepath.Join(cfg.StateDir, statusSocket)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	resp, err := hc.Get("http://bridge/status")
	if err != nil {
		return &cliError{code: CodeUnreachable, exit: ExitUnreachable, err: err,
			msg: fmt.Sprintf("no bridge answers at %s (is `commy bridge --config %s` running?): %v", path, c.String("config"), err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("bridge status: %w", err)
	}
	var st bridge.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("bridge status: %w", err)
	}
	w := c.App.Writer
	if c.Bool("json") {
		_, err := w.Write(body)
		return err
	}
	fmt.Fprintf(w, "host:              %s\n", st.HostID)
	fmt.Fprintf(w, "nats:              %s %s\n", st.NATS, st.NATSURL)
	fmt.Fprintf(w, "stream:            %s, applied up to sequence %d, caught up: %v\n", st.Stream, st.AppliedSeq, st.CaughtUp)
	fmt.Fprintf(w, "pending:           %d batches, %d bytes%s\n", st.PendingBatches, st.PendingBytes, map[bool]string{true: " (over the bound: local changes wait in the broker)"}[st.Paused])
	fmt.Fprintf(w, "last lag:          %s\n", st.LastLag)
	fmt.Fprintf(w, "published/applied: %d/%d batches; %d conflicts resolved; %d values refused\n", st.Published, st.Applied, st.Conflicts, st.Refused)
	fmt.Fprintf(w, "services:          %s\n", strings.Join(st.Services, " "))
	return nil
}
