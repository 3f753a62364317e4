package bench

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/brokertest"
	"github.com/nats-io/nats-server/v2/server"
)

// serve serves a broker until the test ends, and returns its socket.
func serve(t *testing.T) string {
	_, sock := brokertest.Serve(t, broker.Config{})
	return sock
}

// dial connects to the broker at sock until the test ends.
func dial(t *testing.T, sock string) *client.Client {
	t.Helper()
	cl, err := client.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// startNATS runs a single-node JetStream server on a loopback port until
// the test ends, and returns its URL.
func startNATS(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return s.ClientURL()
}

// relay plays host B's bridge with a known delay, on connections of its
// own (a broker does not notify the connection that wrote): for every
// change of the variable on A it writes a decoy to B at once (a change the
// reader on B must not take for the value), then the value itself after
// delay.
func relay(t *testing.T, ctx context.Context, sockA, sockB string, delay time.Duration) {
	t.Helper()
	from, err := dial(t, sockA).Service(ctx, "fed", "bench")
	if err != nil {
		t.Fatal(err)
	}
	to, err := dial(t, sockB).Service(ctx, "fed", "bench")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := from.Subscribe(ctx, Variable)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := func() error {
			for {
				if _, err := sub.Next(ctx); err != nil {
					return err
				}
				v, _, err := from.Read(ctx, Variable)
				if err != nil {
					return err
				}
				decoy := bytes.Clone(v)
				decoy[len(decoy)-1] ^= 0xff
				if _, err := to.Write(ctx, Variable, decoy); err != nil {
					return err
				}
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return ctx.Err()
				}
				if _, err := to.Write(ctx, Variable, v); err != nil {
					return err
				}
			}
		}()
		if ctx.Err() == nil && !errors.Is(err, client.ErrClosed) {
			t.Errorf("relay: %v", err)
		}
	}()
	t.Cleanup(func() {
		sub.Close()
		wg.Wait()
	})
}

// TestFederationWaitsForRemote checks that the federation scenario measures
// until host B's mapped reader holds the very value written on A: with a
// relay that delivers a decoy at once and the value only after a delay,
// every measured op takes at least the delay.
func TestFederationWaitsForRemote(t *testing.T) {
	const delay = 25 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := startNATS(t)
	sockA, sockB := serve(t), serve(t)
	a, b := dial(t, sockA), dial(t, sockB)
	var svcs [2]*client.Service
	for i, cl := range []*client.Client{a, b} {
		if err := cl.CreateTenant(ctx, "fed"); err != nil {
			t.Fatal(err)
		}
		svc, err := cl.CreateService(ctx, "fed", "bench")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Allocate(ctx, Variable, make([]byte, 64), 64); err != nil {
			t.Fatal(err)
		}
		svcs[i] = svc
	}
	relay(t, ctx, sockA, sockB, delay)

	const rounds = 8
	res, err := FederationRun(ctx, Config{Rounds: rounds, Warmup: 1, ValueSize: 64},
		Federation{Writer: svcs[0], Remote: b, Tenant: "fed", Service: "bench", NATS: url, Bucket: "bench-test", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].System != "commy" || res[1].System != "jetstream" {
		t.Fatalf("results %+v, want commy then jetstream", res)
	}
	for _, r := range res {
		if r.Ops != rounds || len(r.Latencies) != rounds {
			t.Errorf("%s: %d ops, %d latencies, want %d", r.System, r.Ops, len(r.Latencies), rounds)
		}
	}
	if fastest := res[0].Latencies[0]; fastest < delay {
		t.Errorf("fastest federated op took %v, less than the relay's %v: the measurement did not wait for host B", fastest, delay)
	}
	if slowest := res[1].Latencies[len(res[1].Latencies)-1]; slowest >= delay {
		t.Logf("slowest floor op took %v (a loaded machine?)", slowest)
	}
}

// TestFederationNotMirrored checks the error when host B never gets the
// service (after the scenario's 10s wait).
func TestFederationNotMirrored(t *testing.T) {
	ctx := context.Background()
	url := startNATS(t)
	a, b := dial(t, serve(t)), dial(t, serve(t))
	if err := a.CreateTenant(ctx, "fed"); err != nil {
		t.Fatal(err)
	}
	svc, err := a.CreateService(ctx, "fed", "bench")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Allocate(ctx, Variable, make([]byte, 64), 64); err != nil {
		t.Fatal(err)
	}
	_, err = FederationRun(ctx, Config{Rounds: 1, ValueSize: 64},
		Federation{Writer: svc, Remote: b, Tenant: "fed", Service: "bench", NATS: url, Bucket: "bench-test"})
	if !errors.Is(err, ErrNotMirrored) {
		t.Fatalf("err = %v, want %v", err, ErrNotMirrored)
	}
}
