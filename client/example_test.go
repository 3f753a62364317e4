package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
)

// exampleBroker starts a broker in this process for the examples and returns
// its socket and a function that stops it.
func exampleBroker() (string, func()) {
	dir, err := os.MkdirTemp("", "commy-example-")
	if err != nil {
		log.Fatal(err)
	}
	b, err := broker.New(broker.Config{DataDir: filepath.Join(dir, "data")})
	if err != nil {
		log.Fatal(err)
	}
	sock := filepath.Join(dir, "commy.sock")
	l, err := broker.Listen(sock, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Serve(l) }()
	return sock, func() {
		b.Shutdown(context.Background())
		<-done
		os.RemoveAll(dir)
	}
}

func Example() {
	sock, stop := exampleBroker()
	defer stop()
	ctx := context.Background()

	c, err := client.Dial(ctx, sock, client.WithName("example"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.CreateTenant(ctx, "plant"); err != nil {
		log.Fatal(err)
	}
	svc, err := c.CreateService(ctx, "plant", "boiler")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := svc.Allocate(ctx, "temperature", []byte("20.0"), 0); err != nil {
		log.Fatal(err)
	}
	if _, err := svc.Write(ctx, "temperature", []byte("21.5")); err != nil {
		log.Fatal(err)
	}
	v, version, err := svc.Read(ctx, "temperature")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s temperature = %s (version %d)\n", svc.ID, v, version)
	// Output: plant_boiler temperature = 21.5 (version 2)
}

func ExampleService_Map() {
	sock, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.CreateTenant(ctx, "plant")
	svc, err := c.CreateService(ctx, "plant", "boiler")
	if err != nil {
		log.Fatal(err)
	}
	svc.Allocate(ctx, "pressure", []byte("1.2 bar"), 0)

	m, err := svc.Map(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	// Reuse one buffer: a mapped read then neither allocates nor makes a
	// system call.
	buf := make([]byte, 0, 64)
	buf, version, err := m.Read("pressure", buf[:0])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("local=%v pressure=%s version=%d\n", m.Local(), buf, version)
	// Output: local=true pressure=1.2 bar version=1
}

func ExampleService_Subscribe() {
	sock, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	writer, err := client.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer writer.Close()
	writer.CreateTenant(ctx, "plant")
	svc, err := writer.CreateService(ctx, "plant", "boiler")
	if err != nil {
		log.Fatal(err)
	}
	svc.Allocate(ctx, "state", []byte("idle"), 0)

	watcher, err := client.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer watcher.Close()
	watched, err := watcher.Service(ctx, "plant", "boiler")
	if err != nil {
		log.Fatal(err)
	}
	// The watcher is a second Client: a connection gets no notice of its
	// own writes.
	sub, err := watched.Subscribe(ctx, "state")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	svc.Write(ctx, "state", []byte("heating"))
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n.Variables, n.Versions)
	// Output: [state] [2]
}

func ExampleService_WorkingCopy() {
	sock, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.CreateTenant(ctx, "plant")
	svc, err := c.CreateService(ctx, "plant", "boiler")
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		svc.Allocate(ctx, name, []byte("0000"), 0)
	}

	wc, err := svc.WorkingCopy(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer wc.Close()
	copy(wc.Bytes("b"), "1234") // edit in place
	sent, err := wc.Sync(ctx)   // one ReportVariableChanges with what changed
	if err != nil {
		log.Fatal(err)
	}
	v, _, _ := svc.Read(ctx, "b")
	fmt.Printf("sent %v; b = %s\n", sent, v)
	// Output: sent [b]; b = 1234
}

func ExampleWithReconnect() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "/run/commy/commy.sock",
		client.WithReconnect(client.Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second}))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for {
		if _, err := c.Heartbeat(ctx); err != nil {
			// The broker went away: wait until the client is back.
			if err := c.WaitConnected(ctx); err != nil {
				log.Fatal(err)
			}
		}
		time.Sleep(time.Second)
	}
}

// Allocate rounds the capacity up to a multiple of 64 bytes.
func ExampleService_Allocate() {
	sock, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.CreateTenant(ctx, "plant")
	svc, err := c.CreateService(ctx, "plant", "boiler")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := svc.Allocate(ctx, "label", []byte("boiler 1"), 100); err != nil {
		log.Fatal(err)
	}
	vs, err := svc.Variables(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: size %d, capacity %d\n", vs[0].Name, vs[0].Size, vs[0].Capacity)
	// Output: label: size 8, capacity 128
}

// Report writes several variables at once: all of them or none.
func ExampleService_Report() {
	sock, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.CreateTenant(ctx, "plant")
	svc, err := c.CreateService(ctx, "plant", "boiler")
	if err != nil {
		log.Fatal(err)
	}
	svc.Allocate(ctx, "min", []byte("0"), 0)
	svc.Allocate(ctx, "max", []byte("0"), 0)
	err = svc.Report(ctx, []client.NamedValue{{Name: "min", Value: []byte("10")}, {Name: "max", Value: []byte("90")}})
	fmt.Println(err)
	// "avg" does not exist, so "min" keeps its value.
	err = svc.Report(ctx, []client.NamedValue{{Name: "min", Value: []byte("20")}, {Name: "avg", Value: []byte("50")}})
	fmt.Println(errors.Is(err, client.ErrVariableNotFound))
	v, _, _ := svc.Read(ctx, "min")
	fmt.Printf("min = %s\n", v)
	// Output:
	// <nil>
	// true
	// min = 10
}

// Broker errors match the sentinel of their code with errors.Is.
func Example_errors() {
	sock, stop := exampleBroker()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Service(ctx, "nobody", "nothing")
	switch {
	case errors.Is(err, client.ErrTenantNotFound):
		fmt.Println("no such tenant")
	case errors.Is(err, client.ErrPermissionDenied):
		fmt.Println("not allowed")
	case err != nil:
		log.Fatal(err)
	}
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println("code:", e.Code)
	}
	// Output:
	// no such tenant
	// code: TENANT_NOT_FOUND
}
