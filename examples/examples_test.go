package examples_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m, nil)
}

// TestProducerConsumer builds both examples and runs them against a broker
// in this process: the consumer must see the producer's counter rise to its
// last value.
func TestProducerConsumer(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the examples: %v", err)
	}
	bin := t.TempDir()
	build := exec.Command(gobin, "build", "-o", bin+string(filepath.Separator), "./producer", "./consumer")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	b, err := broker.New(broker.Config{DataDir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := broker.Listen(sock, 0o600)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-served
	}()

	// The service exists before the consumer starts, so it is watching
	// before the producer writes anything.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTenant(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateService(ctx, "demo", "counter"); err != nil {
		t.Fatal(err)
	}
	c.Close()

	const last = 20
	consumer := exec.CommandContext(ctx, filepath.Join(bin, "consumer"), "-socket", sock, "-until", strconv.Itoa(last), "-timeout", "20s")
	consumer.Stderr = os.Stderr
	out, err := consumer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "ready") {
		consumer.Process.Kill()
		consumer.Wait()
		t.Fatalf("consumer said %q, %v", lines.Text(), lines.Err())
	}
	t.Log("consumer:", lines.Text())

	producer := exec.CommandContext(ctx, filepath.Join(bin, "producer"), "-socket", sock, "-n", strconv.Itoa(last), "-interval", "10ms")
	if out, err := producer.CombinedOutput(); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}

	var seen []int
	for lines.Scan() {
		v, ok := strings.CutPrefix(lines.Text(), "counter ")
		if !ok {
			t.Errorf("consumer said %q", lines.Text())
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, n)
	}
	if err := consumer.Wait(); err != nil {
		t.Fatalf("consumer: %v", err)
	}
	t.Logf("consumer saw %v", seen)
	if len(seen) == 0 || seen[len(seen)-1] != last {
		t.Fatalf("consumer saw %v, want it to end at %d", seen, last)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("consumer saw %v: not increasing", seen)
		}
	}
}
