package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/metrics"
	ucli "github.com/urfave/cli/v2"
)

// metricsFlags are serve's flags for the metrics listener.
func metricsFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "metrics-listen", Usage: "serve Prometheus metrics at /metrics on `ADDR`: a loopback HOST:PORT, or unix:PATH (default: off)"},
		&ucli.BoolFlag{Name: "metrics-allow-remote", Usage: "let --metrics-listen take an address other hosts can reach, such as :9090"},
		&ucli.IntFlag{Name: "metrics-tenants", Value: broker.DefaultMetricsTenants, Usage: "tenants labelled by name in the metrics, the first by id; the rest are summed as tenant=\"" + broker.OtherTenants + "\""},
		&ucli.BoolFlag{Name: "pprof", Usage: "also serve Go profiles at /debug/pprof/ on --metrics-listen: whoever reaches it can profile the broker"},
	}
}

// metricsConfig checks the metrics flags and sets in cfg what they ask of
// the broker. Call it before broker.New.
func metricsConfig(c *ucli.Context, cfg *broker.Config) error {
	addr := c.String("metrics-listen")
	if addr == "" {
		if c.Bool("pprof") {
			return usagef("--pprof needs --metrics-listen")
		}
		return nil
	}
	if _, _, err := metrics.ParseAddress(addr); err != nil {
		return usagef("--metrics-listen: %v", err)
	}
	n := c.Int("metrics-tenants")
	switch {
	case n < 0:
		return usagef("--metrics-tenants %d: want 0 or more", n)
	case n == 0:
		n = -1 // broker.Config: label none
	}
	cfg.Metrics, cfg.MetricsTenants = true, n
	return nil
}

// startMetrics serves b's metrics (and pprof with --pprof) on
// --metrics-listen until stop is called; without --metrics-listen it does
// nothing. stop waits up to 5 seconds for scrapes and profiles in flight and
// is safe to call more than once.
func startMetrics(c *ucli.Context, b *broker.Broker, log *slog.Logger) (stop func() error, err error) {
	var cfg broker.Config
	if err := metricsConfig(c, &cfg); err != nil {
		return nil, err
	}
	if !cfg.Metrics {
		return func() error { return nil }, nil
	}
	addr, remote, pprof := c.String("metrics-listen"), c.Bool("metrics-allow-remote"), c.Bool("pprof")
	l, err := metrics.ListenConfig{AllowRemote: remote}.Listen(c.Context, addr)
	if errors.Is(err, metrics.ErrNotLoopback) {
		return nil, fmt.Errorf("--metrics-listen: %w (--metrics-allow-remote allows it)", err)
	}
	if err != nil {
		return nil, err
	}
	srv, err := metrics.New(metrics.Config{Collector: b.Collector(), Version: broker.Version, Pprof: pprof, Logger: log})
	if err != nil {
		l.Close()
		return nil, err
	}
	srv.Start(l)
	log.Info("metrics serving", "addr", l.Addr().String(), "network", l.Addr().Network(), "pprof", pprof)
	if ta, ok := l.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("metrics are served to other hosts (--metrics-allow-remote)", "addr", l.Addr().String())
	}
	if pprof {
		log.Warn("pprof is served: whoever can reach the metrics listener can profile and trace the broker", "addr", l.Addr().String())
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}, nil
}
