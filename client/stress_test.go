package client_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/testutil"
)

// The stress test's service and its variable names.
const (
	stressTenant  = "stress"
	stressService = "s"
	stressVars    = 64
)

func stressName(k int) string { return fmt.Sprintf("v%02d", k) }

// stressValue is write i's value of n bytes (8 <= n): i and n in the first 8
// bytes, then a pattern derived from both, so a torn value or a mix of two
// writes is caught whatever the lengths.
func stressValue(dst []byte, i uint64, n int) []byte {
	dst = dst[:n]
	binary.LittleEndian.PutUint64(dst, i|uint64(n)<<40)
	for j := 8; j < n; j++ {
		dst[j] = byte(i*131 + uint64(n)*7 + uint64(j))
	}
	return dst
}

// stressCheck returns the write number a value proves, or an error.
func stressCheck(b []byte) (uint64, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("%d bytes", len(b))
	}
	w := binary.LittleEndian.Uint64(b)
	i, n := w&(1<<40-1), w>>40
	if n != uint64(len(b)) {
		return i, fmt.Errorf("write %d: length %d, read %d bytes", i, n, len(b))
	}
	for j := 8; j < len(b); j++ {
		if b[j] != byte(i*131+n*7+uint64(j)) {
			return i, fmt.Errorf("write %d (%d bytes): byte %d torn", i, n, j)
		}
	}
	return i, nil
}

// stressBrokerChild serves a broker of the file backend on COMMY_SOCK with
// data in COMMY_DATA, until it is killed.
func stressBrokerChild() int {
	b, err := broker.New(broker.Config{DataDir: os.Getenv("COMMY_DATA")})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	l, err := broker.Listen(os.Getenv("COMMY_SOCK"), 0o666)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	b.Serve(l)
	return 0
}

// stressResult is what a reader process counts.
type stressResult struct {
	Reads, Torn, Backwards, Spurious, Busy int64
	Errors                                 []string // the first few
	Err                                    string   // the reader could not run
}

// stressReaderChild maps the stress service through a client that
// reconnects, and reads every variable through the mapping until its stdin
// closes. A value must be whole; per variable, a later read never has an
// older version, and a newer version holds a newer write. Once a variable
// was seen, "not found" is spurious; ErrBusy is counted apart (an entry a
// killed broker left mid-publish stays busy until the restart repairs it).
func stressReaderChild() int {
	var r stressResult
	defer func() { json.NewEncoder(os.Stdout).Encode(r) }()
	ctx := context.Background()
	c, err := client.Dial(ctx, os.Getenv("COMMY_SOCK"), client.WithReconnect(client.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}))
	if err != nil {
		r.Err = err.Error()
		return 0
	}
	defer c.Close()
	svc, err := c.Service(ctx, stressTenant, stressService)
	if err != nil {
		r.Err = err.Error()
		return 0
	}
	m, err := svc.Map(ctx)
	if err != nil || !m.Local() {
		r.Err = fmt.Sprintf("map: local %v, %v", m != nil && m.Local(), err)
		return 0
	}
	defer m.Close()
	var stop sync.WaitGroup
	stop.Add(1)
	done := make(chan struct{})
	go func() {
		defer stop.Done()
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	defer stop.Wait()
	type seen struct {
		ok      bool
		ver, wr uint64
	}
	var st [stressVars]seen
	note := func(n *int64, format string, args ...any) {
		*n++
		if len(r.Errors) < 10 {
			r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
		}
	}
	buf := make([]byte, 0, 256<<10)
	for {
		select {
		case <-done:
			return 0
		default:
		}
		for k := range st {
			name := stressName(k)
			b, v, err := m.Read(name, buf)
			buf = b[:0]
			r.Reads++
			switch {
			case errors.Is(err, client.ErrVariableNotFound) && !st[k].ok:
				continue
			case errors.Is(err, client.ErrBusy):
				r.Busy++
				continue
			case err != nil:
				note(&r.Spurious, "%s: %v", name, err)
				continue
			}
			i, err := stressCheck(b)
			if err != nil {
				note(&r.Torn, "%s: %v", name, err)
				continue
			}
			p := st[k]
			switch {
			case p.ok && v < p.ver:
				note(&r.Backwards, "%s: version %d after %d", name, v, p.ver)
			case p.ok && v > p.ver && i <= p.wr:
				note(&r.Backwards, "%s: version %d holds write %d, version %d held write %d", name, v, i, p.ver, p.wr)
			case p.ok && v == p.ver && i != p.wr:
				note(&r.Torn, "%s: version %d holds write %d and write %d", name, v, i, p.wr)
			}
			st[k] = seen{true, v, i}
		}
	}
}

// stressBroker is the broker process the stress test kills and restarts.
type stressBroker struct {
	t         *testing.T
	sock, dir string
	cmd       *exec.Cmd
}

func (b *stressBroker) start() {
	b.t.Helper()
	os.Remove(b.sock) // left by the killed one
	cmd := testutil.Child(b.t, "stress-broker", -1, -1, "COMMY_SOCK="+b.sock, "COMMY_DATA="+b.dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		b.t.Fatalf("broker child: %q", line)
	}
	b.cmd = cmd
}

func (b *stressBroker) kill() {
	b.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Wait()
}

// stressDuration is how long TestStress runs: COMMY_STRESS (a Go duration,
// as `make stress` sets it) or a short run for `make test`.
func stressDuration(t *testing.T) time.Duration {
	s := os.Getenv("COMMY_STRESS")
	if s == "" {
		return 3 * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("COMMY_STRESS=%q: %v", s, err)
	}
	return d
}

// TestStress: a writer grows values from 8 B to 256 KiB and allocates new
// variables while a reader in another process reads them through its
// mapping; the broker is killed with SIGKILL every 1.5 s and restarted on the
// same files. The reader counts torn values, versions going backwards and
// spurious errors; afterwards every acknowledged value must still be there
// (or a newer one). All must be zero.
func TestStress(t *testing.T) {
	dur := stressDuration(t)
	dir := t.TempDir()
	b := &stressBroker{t: t, sock: filepath.Join(dir, "s.sock"), dir: filepath.Join(dir, "data")}
	b.start()
	defer func() { b.kill() }()

	ctx := context.Background()
	c, err := client.Dial(ctx, b.sock, client.WithReconnect(client.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.CreateTenant(ctx, stressTenant); err != nil {
		t.Fatal(err)
	}
	svc, err := c.CreateService(ctx, stressTenant, stressService)
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 256<<10)
	acked := map[string]uint64{}
	var i uint64
	if _, err := svc.Allocate(ctx, stressName(0), stressValue(val, i, 8), 0); err != nil {
		t.Fatal(err)
	}
	acked[stressName(0)] = i

	reader := testutil.Child(t, "stress-reader", -1, -1, "COMMY_SOCK="+b.sock)
	reader.Stderr = os.Stderr
	stdin, err := reader.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := reader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}

	// The killer: SIGKILL and restart, in the middle of whatever the writer does.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	kills := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(1500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				b.kill()
				b.start()
				kills++
			}
		}
	}()

	rng := rand.New(rand.NewPCG(1, 2))
	vars, writes, failed := 1, 0, 0
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		var err error
		i++
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if i%40 == 0 && vars < stressVars {
			name := stressName(vars)
			_, err = svc.Allocate(wctx, name, stressValue(val, i, 8), 0)
			switch {
			case err == nil:
				acked[name] = i
				vars++
			case errors.Is(err, client.ErrAlreadyExists): // its ack was lost
				vars++
				err = nil
			}
		} else {
			name := stressName(rng.IntN(vars))
			n := min(8<<rng.IntN(16)+rng.IntN(64), 256<<10) // 8 B .. 256 KiB
			if _, err = svc.Write(wctx, name, stressValue(val, i, n)); err == nil {
				acked[name] = i
				writes++
			}
		}
		if err != nil {
			failed++
			if !errors.Is(err, client.ErrDisconnected) {
				cancel()
				t.Fatalf("write %d: %v", i, err)
			}
			c.WaitConnected(wctx)
		}
		cancel()
	}
	close(stop)
	wg.Wait()

	stdin.Close()
	var res stressResult
	if err := json.NewDecoder(out).Decode(&res); err != nil {
		t.Fatalf("reader: %v", err)
	}
	if err := reader.Wait(); err != nil {
		t.Fatalf("reader: %v", err)
	}
	if res.Err != "" {
		t.Fatalf("reader: %s", res.Err)
	}
	t.Logf("%v: %d writes acknowledged (%d failed with the broker away), %d variables, %d kills; reader: %d reads, %d busy",
		dur, writes, failed, vars, kills, res.Reads, res.Busy)
	if res.Torn+res.Backwards+res.Spurious != 0 {
		t.Errorf("reader: %d torn, %d backwards, %d spurious errors: %s", res.Torn, res.Backwards, res.Spurious, strings.Join(res.Errors, "; "))
	}
	if kills == 0 || res.Reads == 0 {
		t.Errorf("%d kills, %d reads: nothing was stressed", kills, res.Reads)
	}
	// Nothing acknowledged is lost: each variable holds its last acknowledged
	// write, or a later one whose acknowledgement the kill cut off.
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for name, want := range acked {
		b, _, err := svc.Read(ctx, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got, err := stressCheck(b)
		if err != nil || got < want {
			lost++
			t.Errorf("%s: holds write %d (%v), write %d was acknowledged", name, got, err, want)
		}
	}
	if lost != 0 {
		t.Errorf("%d acknowledged values lost", lost)
	}
}
