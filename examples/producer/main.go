// Command producer is a commy example: it writes a counter to a service,
// creating the tenant, service and variable if they do not exist, and exits
// after the last value.
//
//	producer [-socket /run/commy/commy.sock] -n 20 -interval 50ms
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
	variable := flag.String("variable", "counter", "variable to write")
	n := flag.Int("n", 20, "write 1 to n, then exit")
	interval := flag.Duration("interval", 50*time.Millisecond, "pause between writes")
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
	if err := run(ctx, *socket, *tenant, *service, *variable, *n, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, socket, tenant, name, variable string, n int, interval time.Duration) error {
	c, err := client.Dial(ctx, socket, client.WithName("example-producer"))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.CreateTenant(ctx, tenant); err != nil && !errors.Is(err, client.ErrAlreadyExists) {
		return err
	}
	svc, err := c.CreateService(ctx, tenant, name)
	if errors.Is(err, client.ErrAlreadyExists) {
		svc, err = c.Service(ctx, tenant, name)
	}
	if err != nil {
		return err
	}
	if _, err := svc.Allocate(ctx, variable, []byte("0"), 0); err != nil && !errors.Is(err, client.ErrAlreadyExists) {
		return err
	}
	for i := 1; i <= n; i++ {
		v, err := svc.Write(ctx, variable, []byte(strconv.Itoa(i)))
		if err != nil {
			return err
		}
		fmt.Printf("wrote %d (version %d)\n", i, v)
		if i < n {
			select {
			case <-time.After(interval):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}
