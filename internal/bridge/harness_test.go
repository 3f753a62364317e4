package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/bridge"
	"github.com/commy/commy/internal/testutil"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) {
	testutil.Main(m, testutil.Children{"broker": brokerChild, "natsnode": natsNodeChild})
}

// brokerChild serves a broker on $SOCK with data in $DATA until killed.
func brokerChild() int {
	b, err := broker.New(broker.Config{DataDir: os.Getenv("DATA")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := broker.Listen(os.Getenv("SOCK"), 0o666)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() { <-sigs; b.Shutdown(context.Background()) }()
	b.Serve(l)
	return 0
}

// freePorts finds n distinct loopback TCP ports nobody listens on.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // held until all are chosen, so none repeats
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// natsNodeChild runs one embedded NATS server with JetStream, configured
// by the environment, until killed.
func natsNodeChild() int {
	port, _ := strconv.Atoi(os.Getenv("NATS_PORT"))
	cport, _ := strconv.Atoi(os.Getenv("NATS_CLUSTER_PORT"))
	maxPayload, _ := strconv.Atoi(os.Getenv("NATS_MAX_PAYLOAD"))
	s, err := server.NewServer(&server.Options{
		ServerName: os.Getenv("NATS_NAME"), Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: os.Getenv("NATS_STORE"), NoLog: true, NoSigs: true, MaxPayload: int32(maxPayload),
		Cluster: server.ClusterOpts{Name: "commy-test", Host: "127.0.0.1", Port: cport},
		Routes:  server.RoutesFromStr(os.Getenv("NATS_ROUTES")),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats node not ready")
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	<-sigs
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}

// cluster is three NATS servers with JetStream routed to each other on
// loopback, each with file storage in its own directory. Each runs
// nats-server embedded in a child process of the test, so that a node can be
// killed like a real one.
type cluster struct {
	t     testing.TB
	env   [][]string
	ports []int
	mu    sync.Mutex
	nodes []*exec.Cmd
}

func newCluster(t testing.TB, maxPayload int32) *cluster {
	t.Helper()
	c := &cluster{t: t}
	ports := freePorts(t, 6)
	cports := ports[3:]
	var routes []string
	for _, p := range cports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	for i := range 3 {
		port := ports[i]
		c.ports = append(c.ports, port)
		c.env = append(c.env, []string{
			fmt.Sprintf("NATS_NAME=n%d", i+1), fmt.Sprintf("NATS_PORT=%d", port), fmt.Sprintf("NATS_CLUSTER_PORT=%d", cports[i]),
			"NATS_ROUTES=" + strings.Join(routes, ","), "NATS_STORE=" + t.TempDir(), fmt.Sprintf("NATS_MAX_PAYLOAD=%d", maxPayload),
		})
		c.nodes = append(c.nodes, nil)
	}
	t.Cleanup(func() {
		for i := range 3 {
			c.stop(i)
		}
	})
	for i := range 3 {
		c.start(i)
	}
	c.waitJetStream()
	return c
}

// start runs node i (again) and waits until it takes connections.
func (c *cluster) start(i int) {
	c.t.Helper()
	cmd := testutil.Child(c.t, "natsnode", -1, -1, c.env[i]...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.nodes[i] = cmd
	c.mu.Unlock()
	waitFor(c.t, fmt.Sprintf("nats node %d listening", i+1), func() bool {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.ports[i]))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// stop kills node i with SIGKILL, if it runs.
func (c *cluster) stop(i int) {
	c.mu.Lock()
	cmd := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

func (c *cluster) urls() []string {
	var out []string
	for _, p := range c.ports {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return out
}

// connect opens a JetStream context on the cluster for the test's own use.
func (c *cluster) connect() (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	return c.connectTo(c.urls()...)
}

// streamInfo is the state of the bridges' stream, COMMY, now.
func (c *cluster) streamInfo() *jetstream.StreamInfo {
	c.t.Helper()
	_, js := c.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "COMMY")
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return info
}

// connectTo opens a JetStream context on the nodes at urls.
func (c *cluster) connectTo(urls ...string) (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}

// waitJetStream waits until the cluster has a meta leader and takes streams.
func (c *cluster) waitJetStream() {
	c.t.Helper()
	nc, js := c.connect()
	defer nc.Close()
	waitFor(c.t, "jetstream cluster ready", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
}

// host is one "host": a broker with its own socket and data directory, a
// client for the test, and a bridge.
type host struct {
	t    testing.TB
	name string
	dir  string
	sock string
	cfg  bridge.Config

	b     *broker.Broker
	bdone chan error
	proc  *exec.Cmd // the broker, when it runs as a child process

	cl *client.Client
	br *bridge.Bridge
}

// newHost starts a broker (in the test process, or as a child process when
// child is set) and a bridge for it.
func newHost(t testing.TB, name string, c *cluster, child bool, tweak func(*bridge.Config)) *host {
	t.Helper()
	dir, err := os.MkdirTemp("", "commy-bridge-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &host{t: t, name: name, dir: dir, sock: filepath.Join(dir, "commy.sock")}
	h.cfg = bridge.Config{
		HostID: name, Socket: h.sock, StateDir: filepath.Join(dir, "bridge"),
		ScanInterval: bridge.Duration(100 * time.Millisecond),
		NATS:         bridge.NATSConfig{URLs: c.urls(), ReconnectWait: bridge.Duration(100 * time.Millisecond)},
		JetStream:    bridge.JetStreamConfig{Replicas: 3},
		Federate:     []bridge.Pattern{{Tenant: "fed*"}},
	}
	if tweak != nil {
		tweak(&h.cfg)
	}
	if child {
		h.startChild()
	} else {
		h.startBroker()
	}
	t.Cleanup(h.stopBroker)
	cl, err := client.Dial(context.Background(), h.sock, client.WithReconnect(client.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	h.cl = cl
	t.Cleanup(func() { cl.Close() })
	h.startBridge()
	t.Cleanup(h.stopBridge)
	return h
}

func (h *host) startBroker() {
	h.t.Helper()
	b, err := broker.New(broker.Config{DataDir: filepath.Join(h.dir, "data")})
	if err != nil {
		h.t.Fatal(err)
	}
	l, err := broker.Listen(h.sock, 0o666)
	if err != nil {
		b.Close()
		h.t.Fatal(err)
	}
	h.b, h.bdone = b, make(chan error, 1)
	go func() { h.bdone <- b.Serve(l) }()
}

func (h *host) startChild() {
	h.t.Helper()
	cmd := testutil.Child(h.t, "broker", -1, -1, "SOCK="+h.sock, "DATA="+filepath.Join(h.dir, "data"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.proc = cmd
	waitFor(h.t, "child broker listening", func() bool {
		c, err := net.Dial("unix", h.sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill SIGKILLs the child broker and reaps it.
func (h *host) kill() {
	h.t.Helper()
	if err := h.proc.Process.Kill(); err != nil {
		h.t.Fatal(err)
	}
	h.proc.Wait()
	h.proc = nil
	os.Remove(h.sock) // a killed broker leaves its socket file
}

func (h *host) stopBroker() {
	if h.proc != nil {
		h.proc.Process.Signal(syscall.SIGTERM)
		h.proc.Wait()
		h.proc = nil
	}
	if h.b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.b.Shutdown(ctx)
		cancel()
		<-h.bdone
		h.b.Close()
		h.b = nil
	}
}

func (h *host) startBridge() {
	h.t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{h.t, h.name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	br, err := bridge.New(context.Background(), h.cfg, bridge.Options{Logger: log})
	if err != nil {
		h.t.Fatal(err)
	}
	h.br = br
}

func (h *host) stopBridge() {
	if h.br != nil {
		if err := h.br.Close(); err != nil {
			h.t.Error(err)
		}
		h.br = nil
	}
}

// testWriter sends log lines to t.Log while the test runs.
type testWriter struct {
	t    testing.TB
	name string
}

var logMu sync.Mutex

func (w testWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	if os.Getenv("BRIDGE_TEST_LOG") != "" {
		fmt.Fprintf(os.Stderr, "%s: %s", w.name, p)
	}
	return len(p), nil
}

// waitFor polls cond until it holds, failing the test after 30 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// read reads a variable through a mapping of the service, or reports why
// not.
func (h *host) read(tenant, svc, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.cl.Service(ctx, tenant, svc)
	if err != nil {
		return nil, err
	}
	data, _, err := s.Read(ctx, name)
	return data, err
}

// waitValue waits until every host holds want for the variable.
func waitValue(t testing.TB, hosts []*host, tenant, svc, name, want string) {
	t.Helper()
	for _, h := range hosts {
		waitFor(t, fmt.Sprintf("%s: %s/%s/%s = %q", h.name, tenant, svc, name, want), func() bool {
			data, err := h.read(tenant, svc, name)
			return err == nil && string(data) == want
		})
	}
}

// waitGone waits until no host has the variable (or the service, when name
// is empty).
func waitGone(t testing.TB, hosts []*host, tenant, svc, name string) {
	t.Helper()
	for _, h := range hosts {
		waitFor(t, fmt.Sprintf("%s: %s/%s/%s gone", h.name, tenant, svc, name), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := h.cl.Service(ctx, tenant, svc)
			if errors.Is(err, client.ErrServiceNotFound) || errors.Is(err, client.ErrTenantNotFound) {
				return true
			}
			if err != nil || name == "" {
				return false
			}
			_, _, err = s.Read(ctx, name)
			return errors.Is(err, client.ErrVariableNotFound)
		})
	}
}

// service creates (or finds) a service on h.
func (h *host) service(tenant, name string) *client.Service {
	h.t.Helper()
	ctx := context.Background()
	if err := h.cl.CreateTenant(ctx, tenant); err != nil && !errors.Is(err, client.ErrAlreadyExists) {
		h.t.Fatal(err)
	}
	s, err := h.cl.CreateService(ctx, tenant, name)
	if errors.Is(err, client.ErrAlreadyExists) {
		s, err = h.cl.Service(ctx, tenant, name)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// set writes a value on h, allocating the variable when needed.
func (h *host) set(s *client.Service, name, val string) {
	h.t.Helper()
	ctx := context.Background()
	_, err := s.Write(ctx, name, []byte(val))
	if errors.Is(err, client.ErrVariableNotFound) {
		_, err = s.Allocate(ctx, name, []byte(val), 0)
	}
	if err != nil {
		h.t.Fatalf("%s: set %s: %v", h.name, name, err)
	}
}
