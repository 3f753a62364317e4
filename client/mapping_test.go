package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/testutil"
)

// TestMappingMatchesSocket: after random writes, including values that grow
// past their capacity and move, every mapped read equals ReadVariable.
func TestMappingMatchesSocket(t *testing.T) {
	for _, backend := range []string{broker.BackendFile, broker.BackendMemfd} {
		t.Run(backend, func(t *testing.T) {
			h := start(t, broker.Config{Backend: backend})
			c := h.dial(t)
			ctx := ctxT(t)
			vars := map[string][]byte{}
			for i := 0; i < 40; i++ {
				vars[varName(i)] = []byte(varName(i))
			}
			svc := service(t, c, "t", "m", vars)
			m, err := svc.Map(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if !m.Local() {
				t.Fatal("root may map: want a local mapping")
			}
			rng := rand.New(rand.NewPCG(1, 2))
			sizes := map[string]int{}
			var buf []byte
			for round := 0; round < 400; round++ {
				name := varName(rng.IntN(40))
				n := rng.IntN(64)
				if rng.IntN(8) == 0 {
					n = min(sizes[name]+64+rng.IntN(4096), 256<<10) // outgrow the slot
				}
				sizes[name] = n
				val := make([]byte, n)
				for i := range val {
					val[i] = byte(rng.Uint32())
				}
				if _, err := svc.Write(ctx, name, val); err != nil {
					t.Fatal(err)
				}
				if round%50 != 49 {
					continue
				}
				for i := 0; i < 40; i++ {
					name := varName(i)
					want, wv, err := svc.Read(ctx, name)
					if err != nil {
						t.Fatal(err)
					}
					var v uint64
					buf, v, err = m.Read(name, buf[:0])
					if err != nil || v != wv || !bytes.Equal(buf, want) {
						t.Fatalf("round %d %s: mapped %d bytes v%d %v, socket %d bytes v%d", round, name, len(buf), v, err, len(want), wv)
					}
				}
			}
			if _, _, err := m.Read("nope", nil); !errors.Is(err, client.ErrVariableNotFound) {
				t.Fatalf("missing variable: %v", err)
			}
			vs, err := m.Variables(ctx)
			if err != nil || len(vs) != 40 {
				t.Fatalf("variables: %d %v", len(vs), err)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if err := m.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, _, err := m.Read(varName(0), nil); !errors.Is(err, client.ErrClosed) {
				t.Fatalf("read after Close: %v", err)
			}
		})
	}
}

func TestMappedReadAllocs(t *testing.T) {
	h := start(t, broker.Config{})
	c := h.dial(t)
	svc := service(t, c, "t", "allocs", map[string][]byte{"v": bytes.Repeat([]byte{7}, 64)})
	m, err := svc.Map(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	buf := make([]byte, 0, 64)
	var rerr error
	allocs := testing.AllocsPerRun(1000, func() {
		buf, _, rerr = m.Read("v", buf[:0])
	})
	if rerr != nil || len(buf) != 64 {
		t.Fatalf("read: %d bytes, %v", len(buf), rerr)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per mapped read", allocs)
	}
}

// noMapResult is what the nomap child reports.
type noMapResult struct {
	UID       uint64
	Local     bool
	Value     string
	Version   uint64
	Variables int
	Err       string
}

// noMapChild maps COMMY_SERVICE (tenant t) on COMMY_SOCK and reads "v".
func noMapChild() int {
	var r noMapResult
	defer func() { json.NewEncoder(os.Stdout).Encode(r) }()
	ctx := context.Background()
	c, err := client.Dial(ctx, os.Getenv("COMMY_SOCK"))
	if err != nil {
		r.Err = err.Error()
		return 0
	}
	defer c.Close()
	r.UID = c.Welcome().UID
	svc, err := c.Service(ctx, "t", os.Getenv("COMMY_SERVICE"))
	if err != nil {
		r.Err = err.Error()
		return 0
	}
	m, err := svc.Map(ctx)
	if err != nil {
		r.Err = err.Error()
		return 0
	}
	defer m.Close()
	r.Local = m.Local()
	v, ver, err := m.Read("v", nil)
	if err != nil {
		r.Err = err.Error()
		return 0
	}
	r.Value, r.Version = string(v), ver
	vs, err := m.Variables(ctx)
	if err != nil {
		r.Err = err.Error()
	}
	r.Variables = len(vs)
	return 0
}

// TestMapFallback: a user granted read but not map gets a Mapping that reads
// over the socket and says so.
func TestMapFallback(t *testing.T) {
	testutil.RequireRoot(t)
	policy, err := broker.ParsePolicy([]byte(fmt.Sprintf(`
[[grant]]
users = [%d]
tenants = ["t"]
services = ["ro"]
rights = ["read"]
`, testutil.Nobody)))
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, broker.Config{Policy: policy})
	c := h.dial(t)
	svc := service(t, c, "t", "ro", map[string][]byte{"v": []byte("hello"), "w": nil})
	if _, err := svc.Write(ctxT(t), "v", []byte("hello again")); err != nil {
		t.Fatal(err)
	}
	cmd := testutil.Child(t, "nomap", testutil.Nobody, testutil.Nobody, "COMMY_SOCK="+h.sock, "COMMY_SERVICE=ro")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, stderr.String())
	}
	var r noMapResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("child said %q: %v", out, err)
	}
	want := noMapResult{UID: testutil.Nobody, Local: false, Value: "hello again", Version: 2, Variables: 2}
	if r != want {
		t.Fatalf("child saw %+v, want %+v", r, want)
	}
}

// TestMappingWait: a mapped watcher is woken by another client's write
// through the file's futex, with no subscription.
func TestMappingWait(t *testing.T) {
	h := start(t, broker.Config{})
	ctx := t.Context()
	w := h.dial(t)
	w.CreateTenant(ctx, "t")
	svc, err := w.CreateService(ctx, "t", "s")
	if err != nil {
		t.Fatal(err)
	}
	svc.Allocate(ctx, "v", []byte("0"), 0)
	r := h.dial(t)
	rs, _ := r.Service(ctx, "t", "s")
	m, err := rs.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	client.SetWaitSlice(m, time.Hour) // only the wake ends the wait in time
	seq := m.ChangeSeq()
	got := make(chan []byte, 1)
	go func() {
		if _, err := m.Wait(ctx, seq); err != nil {
			t.Error(err)
		}
		b, _, _ := m.Read("v", nil)
		got <- b
	}()
	testutil.WaitFutexSleepers(t, os.Getpid(), 1) // asleep in the kernel
	if _, err := svc.Write(ctx, "v", []byte("1")); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "1" {
			t.Fatalf("after the wake, v = %q", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watcher not woken: no FUTEX_WAKE reached it")
	}
}
