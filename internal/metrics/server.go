package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrClosed is returned by Serve after Shutdown or Close.
var ErrClosed = errors.New("metrics: server closed")

// Config configures a Server.
type Config struct {
	// Collector is what /metrics serves besides the build, Go runtime and
	// process metrics: the broker's, from broker.(*Broker).Collector.
	Collector prometheus.Collector
	// Version is the version label of commy_build_info.
	Version string
	// Pprof serves net/http/pprof under /debug/pprof/. Anyone who can
	// reach the listener can then profile and trace the process.
	Pprof  bool
	Logger *slog.Logger
}

// Server serves /metrics and, when enabled, /debug/pprof/ over HTTP, like
// net/http's Server: Serve on listeners (or Start), then Shutdown or Close.
// It is safe for concurrent use.
type Server struct {
	http *http.Server
	log  *slog.Logger
	wg   sync.WaitGroup // goroutines of Start

	closeOnce sync.Once
	closeErr  error
}

// New builds a Server and the registry behind its /metrics.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "commy_build_info",
			Help:        "Always 1; the labels say which commy and which Go built the broker.",
			ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	if cfg.Collector != nil {
		cs = append(cs, cfg.Collector)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            errorLog{cfg.Logger},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	})))
	index := "commy broker\n\n/metrics  Prometheus metrics\n"
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		index += "/debug/pprof/  Go profiles\n"
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(index))
	})
	return &Server{
		http: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		},
		log: cfg.Logger,
	}, nil
}

// Handler is what the Server serves, for tests and for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve serves HTTP on l until Shutdown or Close, then returns ErrClosed; it
// closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrClosed
	}
	return fmt.Errorf("metrics: serve: %w", err)
}

// Start serves l on a goroutine the Server owns; Shutdown and Close wait
// for it. A failure other than closing is logged.
func (s *Server) Start(l net.Listener) {
	s.wg.Go(func() {
		if err := s.Serve(l); !errors.Is(err, ErrClosed) {
			s.log.Error("metrics server failed", "addr", l.Addr().String(), "err", err)
		}
	})
}

// Shutdown stops accepting and waits for the requests being served (a
// pprof profile may take its full duration) until ctx ends, then closes
// what is left. It is safe to call more than once, and with Close.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.Close())
	}
	s.wg.Wait()
	return err
}

// Close closes the listeners and connections at once and waits for the
// goroutines of Start. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.http.Close() })
	s.wg.Wait()
	return s.closeErr
}

// errorLog passes promhttp's errors to the logger.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) { l.log.Error("metrics: " + fmt.Sprint(v...)) }
