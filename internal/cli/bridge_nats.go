package cli

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	ucli "github.com/urfave/cli/v2"
)

// bridgeNATS runs a single-node NATS server with JetStream until SIGINT or
// SIGTERM: enough to try the bridge on one machine.
func bridgeNATS(c *ucli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(c.String("listen"))
	if err != nil {
		return usagef("--listen %q: want HOST:PORT", c.String("listen"))
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return usagef("--listen %q: bad port", c.String("listen"))
	}
	if ip := net.ParseIP(host); !c.Bool("allow-remote") && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return usagef("--listen %q: not a loopback address (--allow-remote allows it)", c.String("listen"))
	}
	if err := os.MkdirAll(c.String("store"), 0o750); err != nil {
		return fmt.Errorf("--store: %w", err)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "commy-dev", Host: host, Port: p, JetStream: true, StoreDir: c.String("store"),
		NoSigs: true, NoLog: true,
	})
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("nats: not ready to take connections within 10s (is %s taken?)", c.String("listen"))
	}
	log.Info("development NATS server with JetStream serving", "url", s.ClientURL(), "store", c.String("store"))
	sig := <-sigs
	log.Info("shutting down", "signal", sig.String())
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}
