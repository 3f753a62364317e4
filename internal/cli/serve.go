package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/paths"
	"github.com/commy/commy/internal/shm"
	"github.com/coreos/go-systemd/v22/daemon"
	ucli "github.com/urfave/cli/v2"
)

func serveCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "serve",
		Usage: "run the broker",
		Description: "Serves the commy protocol on a Unix socket until SIGINT or SIGTERM (graceful: stop accepting,\n" +
			"finish in-flight requests, flush the audit log, remove the socket file). SIGHUP reloads the policy; SIGUSR1 reopens the audit log (logrotate).\n" +
			"Under systemd it serves the sockets a socket unit passes (LISTEN_FDS; --socket is then ignored and\n" +
			"the socket file left to systemd) and reports readiness, reloads, status and watchdog pings through\n" +
			"NOTIFY_SOCKET (Type=notify, WatchdogSec=). With --backend memfd it keeps every tenant and service in the\n" +
			"unit's file descriptor store (FileDescriptorStoreMax=) and restores them when systemd starts it again.",
		Flags: append([]ucli.Flag{
			&ucli.StringFlag{Name: "data-dir", Usage: "service files and the audit log `DIR`", EnvVars: []string{paths.DataDirEnv}, DefaultText: paths.DataDirHelp},
			&ucli.StringFlag{Name: "backend", Value: broker.BackendFile, Usage: "service file backend: file (persistent) or memfd (sealed, in memory)"},
			&ucli.StringFlag{Name: "policy", Usage: "TOML policy `FILE` (default: only root and the broker's user have rights)"},
			&ucli.StringFlag{Name: "audit-log", Usage: "audit log `FILE` (default: <data-dir>/audit.log)"},
			&ucli.IntFlag{Name: "max-frame", Value: ipc.DefaultMaxFrame, Usage: "largest frame body in `BYTES`"},
			&ucli.StringFlag{Name: "socket-mode", Value: "0666", Usage: "permission bits of the socket file (octal)"},
			&ucli.IntFlag{Name: "max-connections", Value: broker.DefaultMaxConnections, Usage: "connections served at once; more are refused"},
			&ucli.Int64Flag{Name: "max-service-size", Value: shm.DefaultMaxSize, Usage: "largest size of a service file in `BYTES`"},
			&ucli.IntFlag{Name: "max-variables", Value: shm.DefaultDirCap, Usage: "variables per service"},
			&ucli.DurationFlag{Name: "write-timeout", Value: broker.DefaultWriteTimeout, Usage: "drop a client that reads nothing of what the broker sends for this long"},
			readSpinFlag(),
			&ucli.BoolFlag{Name: "no-io-uring", Usage: "never use io_uring: one system call for each notice of a fan-out, and for each read and reply of the event loop"},
			&ucli.BoolFlag{Name: "no-event-loop", Usage: "serve every connection from a goroutine of its own, never from the event loop that serves many busy connections from one"},
			&ucli.IntFlag{Name: "procs", Usage: "run the broker's goroutines on at most `N` CPUs at once, with an event loop for each (default: $GOMAXPROCS if set, else half the CPUs the process may use, at least 1)"},
			&ucli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&ucli.StringFlag{Name: "log-format", Value: "auto", Usage: "text, json, or auto (json under systemd)"},
			&ucli.BoolFlag{Name: "fd-store", Value: true, Usage: "with --backend memfd under systemd, keep tenants and services in the unit's file descriptor store (FileDescriptorStoreMax=) so that they survive a restart"},
			&ucli.BoolFlag{Name: "ebpf-audit", Usage: "audit every open and mmap of service files with an eBPF probe (root, or CAP_BPF and CAP_PERFMON)"},
		}, append(metricsFlags(), limitFlags()...)...),
		Action: serve,
	}
}

func newLogger(c *ucli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, usagef("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := c.String("log-format")
	if format == "auto" {
		format = "text"
		if os.Getenv("JOURNAL_STREAM") != "" || os.Getenv("INVOCATION_ID") != "" {
			format = "json"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(c.App.ErrWriter, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(c.App.ErrWriter, opts)), nil
	}
	return nil, usagef("--log-format %q: want text, json or auto", format)
}

func serve(c *ucli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	mode, err := strconv.ParseUint(strings.TrimPrefix(c.String("socket-mode"), "0o"), 8, 32)
	if err != nil || mode > 0o777 {
		return usagef("--socket-mode %q: want octal permission bits such as 0660", c.String("socket-mode"))
	}
	watchdog, err := watchdogInterval()
	if err != nil {
		return err
	}
	procs, err := procsOf(c, max(1, runtime.GOMAXPROCS(0)/2))
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(procs)
	policyFile := c.String("policy")
	var policy *broker.Policy
	if policyFile != "" {
		if policy, err = broker.LoadPolicy(policyFile); err != nil {
			return err
		}
	}

	// Registered first so that a SIGTERM during a long recovery still stops
	// the broker gracefully.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	inherited, stored, err := systemdFDs()
	if err != nil {
		return err
	}
	socket, err := socketOf(c)
	if err != nil && len(inherited) == 0 {
		closeStored(stored)
		return err
	}
	var served []string
	for _, l := range inherited {
		served = append(served, socketPath(l))
	}
	if len(inherited) > 0 {
		if socket != "" && !slices.Contains(served, socket) {
			level := slog.LevelInfo
			if socketSet(c) {
				level = slog.LevelWarn
			}
			log.Log(c.Context, level, "serving the sockets systemd passed; --socket is ignored", "socket", socket, "passed", strings.Join(served, " "))
		}
		if c.IsSet("socket-mode") {
			log.Warn("--socket-mode is ignored for sockets systemd passed (SocketMode= in the socket unit sets it)")
		}
		if served[0] != "" {
			socket = served[0]
		}
	}
	ls := make([]net.Listener, 0, max(1, len(inherited)))
	for _, l := range inherited {
		ls = append(ls, l)
	}
	if len(ls) == 0 {
		// Listen before the data directory is touched: a second broker on
		// the same socket stops here instead of recovering (and repairing)
		// the data of the broker that is running.
		l, err := broker.Listen(socket, os.FileMode(mode))
		if err != nil {
			closeStored(stored)
			return err
		}
		ls, served = append(ls, l), []string{socket}
	}

	dataDir := c.String("data-dir")
	if dataDir == "" {
		if dataDir, err = paths.DefaultDataDir(os.Getuid()); err != nil {
			closeListeners(ls)
			closeStored(stored)
			return err
		}
		// Earlier versions kept the default data directory beside the socket.
		if old := filepath.Join(filepath.Dir(socket), "data"); old != dataDir {
			if fi, err := os.Lstat(old); err == nil && fi.IsDir() {
				log.Warn("a data directory from an earlier version is beside the socket and is not served; "+
					"move its contents to the data directory or pass --data-dir", "old", old, "data_dir", dataDir)
			}
		}
	}
	cfg := broker.Config{
		DataDir: dataDir, Backend: c.String("backend"), AuditLog: c.String("audit-log"), Policy: policy,
		MaxFrame: c.Int("max-frame"), MaxConnections: c.Int("max-connections"), WriteTimeout: c.Duration("write-timeout"), Logger: log,
		ReadSpin: readSpin(c), NoIOURing: c.Bool("no-io-uring"), NoLoop: c.Bool("no-event-loop"),
		Service: shm.Options{MaxSize: c.Int64("max-service-size"), DirCapacity: c.Int("max-variables")},
	}
	limitConfig(c, &cfg)
	if err := metricsConfig(c, &cfg); err != nil {
		closeListeners(ls)
		closeStored(stored)
		return err
	}
	store, err := fdStoreConfig(c, &cfg, stored, log)
	if err != nil {
		closeListeners(ls)
		return err
	}
	if store != nil {
		defer store.Close() // after serveUntilSignal has shut the broker down
	}
	if c.Bool("ebpf-audit") {
		cfg.Probe = startProbe(log)
	}
	b, err := broker.New(cfg)
	if err != nil {
		if cfg.Probe != nil {
			cfg.Probe.Close()
		}
		closeListeners(ls)
		return err
	}
	stopMetrics, err := startMetrics(c, b, log)
	if err != nil {
		b.Close()
		closeListeners(ls)
		return err
	}
	defer stopMetrics() // after serveUntilSignal has shut the broker down
	policyNote := policyFile
	if policyNote == "" {
		policyNote = fmt.Sprintf("none: only root and the broker's user (uid %d) have rights", os.Getuid())
	}
	log.Info("commy broker serving", "socket", strings.Join(served, " "), "socket_activated", len(inherited) > 0, "data_dir", dataDir,
		"backend", cfg.Backend, "policy", policyNote, "procs", runtime.GOMAXPROCS(0), "version", broker.Version, "pid", os.Getpid())
	return serveUntilSignal(b, ls, sigs, policyFile, watchdog, log)
}

// procsOf is how many CPUs the process's goroutines run on at once
// (GOMAXPROCS): --procs, else GOMAXPROCS from the environment, else def.
//
// serve's def is half of what the runtime found the process may use (its
// CPU affinity and cgroup quota). Every client of a broker runs on the same
// machine, and a client spends about as much CPU on a request as the broker
// does, so more than half the CPUs would only add the wake-ups of idle
// threads: on two vCPUs one runtime thread fewer cut the broker's CPU per
// write by 8%.
func procsOf(c *ucli.Context, def int) (int, error) {
	switch n := c.Int("procs"); {
	case n < 0:
		return 0, usagef("--procs %d: want a count of CPUs, or 0 for the default", n)
	case n > 0:
		return n, nil
	}
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0), nil
	}
	return def, nil
}

// fdStoreConfig sets cfg.FDStore and cfg.Restore for the memfd backend
// under systemd, and closes the stored descriptors it does not hand on. It
// returns the store it made, or nil.
func fdStoreConfig(c *ucli.Context, cfg *broker.Config, stored []broker.StoredFD, log *slog.Logger) (*fdStore, error) {
	use := cfg.Backend == broker.BackendMemfd && c.Bool("fd-store") && os.Getenv("NOTIFY_SOCKET") != ""
	if !use {
		if len(stored) > 0 {
			log.Warn("fd store: descriptors passed back are ignored; they stay in the store", "descriptors", len(stored),
				"backend", cfg.Backend, "fd_store", c.Bool("fd-store"))
		}
		closeStored(stored)
		return nil, nil
	}
	s, err := newFDStore(log)
	if err != nil {
		closeStored(stored)
		return nil, err
	}
	cfg.FDStore, cfg.Restore = s, stored
	log.Info("fd store: keeping tenants and services in systemd's file descriptor store", "restoring", len(stored), "max", s.max)
	return s, nil
}

// serveUntilSignal serves b on every listener until SIGINT or SIGTERM,
// reloads the policy on SIGHUP, and tells systemd about each step. When it
// returns, the goroutines it started have ended and every listener is closed.
func serveUntilSignal(b *broker.Broker, ls []net.Listener, sigs <-chan os.Signal, policyFile string,
	watchdog time.Duration, log *slog.Logger) error {
	served := make(chan error, len(ls))
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() { served <- b.Serve(l) })
	}
	n := &notifier{log: log}
	ctx, cancel := context.WithCancel(context.Background())
	if n.enabled() {
		wg.Go(func() { n.run(ctx, b, watchdog) })
	}
	defer func() {
		cancel()
		wg.Wait()
		closeListeners(ls) // those a Serve closed already just return an error
	}()
	// The listeners exist and the kernel queues connections on them, so the
	// broker accepts from here on, even before each Serve reaches Accept.
	n.notify(daemon.SdNotifyReady + "\n" + status(b, ""))
	for {
		select {
		case err := <-served: // a listener failed, or the broker was closed
			n.notify(daemon.SdNotifyStopping)
			b.Close() // ends the other Serve calls
			if errors.Is(err, broker.ErrClosed) {
				return nil
			}
			return err
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				b.ReopenAudit()
				log.Info("SIGUSR1: audit log reopened")
				continue
			}
			if sig == syscall.SIGHUP {
				n.notify(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading the policy")
				note := reloadPolicy(b, policyFile, log)
				n.notify(daemon.SdNotifyReady + "\n" + status(b, note))
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			n.notify(daemon.SdNotifyStopping + "\nSTATUS=shutting down")
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := b.Shutdown(sctx)
			scancel()
			if err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			log.Info("stopped")
			return nil
		}
	}
}

func closeListeners[L net.Listener](ls []L) {
	for _, l := range ls {
		l.Close()
	}
}

// reloadPolicy reads the policy file again; a broken file keeps the old
// policy and says why. It returns what happened, for STATUS=.
func reloadPolicy(b *broker.Broker, file string, log *slog.Logger) string {
	if file == "" {
		log.Info("SIGHUP: no --policy file to reload")
		return "no --policy file to reload"
	}
	if err := b.ReloadPolicy(file); err != nil {
		log.Error("policy reload failed; keeping the previous policy", "file", file, "err", err)
		return "policy reload failed, previous policy kept: " + err.Error()
	}
	log.Info("policy reloaded", "file", file)
	return "policy reloaded"
}

func readSpinFlag() ucli.Flag {
	return &ucli.DurationFlag{Name: "read-spin", Value: broker.DefaultReadSpin, Usage: "after a reply, read again for this long before sleeping when the client answers that fast and no other is being served, saving the wake-up of an idle CPU (0: never)"}
}

// readSpin is --read-spin as broker.Config wants it: 0 there is the default.
func readSpin(c *ucli.Context) time.Duration {
	if d := c.Duration("read-spin"); d > 0 {
		return d
	}
	return -1
}
