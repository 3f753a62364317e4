package broker_test

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/commy/commy/broker"
)

// serveChild runs a broker on COMMY_SOCK with data in COMMY_DATA until
// SIGTERM, for tests that kill or restart a broker process.
func serveChild() int {
	b, err := broker.New(broker.Config{DataDir: os.Getenv("COMMY_DATA")})
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
