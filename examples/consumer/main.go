// Command consumer is a commy example: it watches the counter the producer
// example writes and prints each value it sees, reading through the
// shared-memory mapping (or the socket, without the map right). It waits for
// the service to appear, and exits once it has seen -until.
//
//	consumer [-socket /run/commy/commy.sock] -until 20
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/commy/commy/client"
)

func main() {
	socket := flag.String("socket", "", "the broker's socket (default: client.DefaultSocket, as for commy)")
	tenant := flag.String("tenant", "demo", "tenant")
	service := flag.String("service", "counter", "service")
	variable := flag.String("variable", "counter", "variable to watch")
	until := flag.Int("until", 0, "exit after seeing this value (0: run until interrupted)")
	timeout := flag.Duration("timeout", 0, "give up after this long (0: never)")
	flag.Parse()
	if *socket == "" {
		var err error
		if *socket, err = client.DefaultSocket(); err != nil {
			fmt.Fprintln(os.Stderr, err, "(name the socket with -socket)")
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if err := run(ctx, *socket, *tenant, *service, *variable, *until); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, socket, tenant, name, variable string, until int) error {
	c, err := client.Dial(ctx, socket, client.WithName("example-consumer"),
		client.WithReconnect(client.Backoff{}))
	if err != nil {
		return err
	}
	defer c.Close()
	svc, err := waitService(ctx, c, tenant, name)
	if err != nil {
		return err
	}
	// Subscribe before the first read, so no change falls in between.
	sub, err := svc.Subscribe(ctx, variable)
	if err != nil {
		return err
	}
	defer sub.Close()
	m, err := svc.Map(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	how := "mapped"
	if !m.Local() {
		how = "over the socket"
	}
	fmt.Printf("ready: watching %s/%s %s (%s)\n", tenant, name, variable, how)
	last := -1
	var buf []byte
	for {
		buf, _, err = m.Read(variable, buf[:0])
		switch {
		case errors.Is(err, client.ErrVariableNotFound):
			// Not allocated yet: the notice of its allocation wakes us.
		case err != nil:
			return err
		default:
			n, err := strconv.Atoi(string(buf))
			if err != nil {
				return fmt.Errorf("%s holds %q: %w", variable, buf, err)
			}
			if n != last {
				fmt.Printf("counter %d\n", n)
				last = n
			}
			if until > 0 && n >= until {
				return nil
			}
		}
		if _, err := sub.Next(ctx); err != nil {
			return err
		}
	}
}

// waitService looks the service up until it exists.
func waitService(ctx context.Context, c *client.Client, tenant, name string) (*client.Service, error) {
	for {
		svc, err := c.Service(ctx, tenant, name)
		if !errors.Is(err, client.ErrServiceNotFound) && !errors.Is(err, client.ErrTenantNotFound) {
			return svc, err
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
