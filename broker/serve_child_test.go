package broker_test

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/commy/commy/broker"
)

// serveChild runs a broker on COMMY_SOCK with data in COMMY_DATA until
// SIGTERM, for tests that kill or restart a broker process.
// COMMY_POLICY is a policy's text, COMMY_NOFILE a descriptor limit (soft and
// hard) to run under.
func serveChild() int {
	cfg := broker.Config{DataDir: os.Getenv("COMMY_DATA")}
	if src := os.Getenv("COMMY_POLICY"); src != "" {
		p, err := broker.ParsePolicy([]byte(src))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		cfg.Policy = p
	}
	if n, err := strconv.ParseUint(os.Getenv("COMMY_NOFILE"), 10, 64); err == nil {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	b, err := broker.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	l, err := broker.Listen(os.Getenv("COMMY_SOCK"), 0o666)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		b.Close()
	}()
	fmt.Println("ready")
	b.Serve(l)
	return 0
}

// connectChild connects to COMMY_SOCK, prints its pid and exits without a
// word (COMMY_CONNECTS times, default once), for tests of what the broker
// learns about a peer that is gone and of reconnect floods.
func connectChild() int {
	n, _ := strconv.Atoi(os.Getenv("COMMY_CONNECTS"))
	for i := range max(n, 1) {
		c, err := net.Dial("unix", os.Getenv("COMMY_SOCK"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if i == 0 {
			fmt.Println(os.Getpid())
		}
		c.Close()
	}
	return 0
}
