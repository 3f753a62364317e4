package client_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
)

// next waits for a notice and returns it as name -> version.
func next(t *testing.T, sub *client.Subscription) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if len(n.Variables) != len(n.Versions) {
		t.Fatalf("notice %+v", n)
	}
	out := map[string]uint64{}
	for i, name := range n.Variables {
		out[name] = n.Versions[i]
	}
	return out
}

// quiet checks that no notice arrives for a while.
func quiet(t *testing.T, sub *client.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if n, err := sub.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unexpected notice %+v, %v", n, err)
	}
}

func equal(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestSubscriptions: several Subscriptions to one service on one client each
// get their own variables; notices merge while nobody calls Next; deletion
// is version 0; closing one leaves the others working.
func TestSubscriptions(t *testing.T) {
	h := start(t, broker.Config{})
	w := h.dial(t)
	r := h.dial(t)
	ctx := ctxT(t)
	svcW := service(t, w, "t", "subs", map[string][]byte{"x": nil, "y": nil, "z": nil})
	svcR, err := r.Service(ctx, "t", "subs")
	if err != nil {
		t.Fatal(err)
	}
	all, err := svcR.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	onlyX, err := svcR.Subscribe(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	onlyY, err := svcR.Subscribe(ctx, "y")
	if err != nil {
		t.Fatal(err)
	}
	defer onlyY.Close()

	for _, n := range []string{"x", "y", "x", "z"} {
		if _, err := svcW.Write(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]uint64{"x": 3, "y": 2, "z": 2}
	got := map[string]uint64{}
	for !equal(got, want) {
		for k, v := range next(t, all) {
			got[k] = v
		}
	}
	if got := next(t, onlyX); !equal(got, map[string]uint64{"x": 3}) {
		// The two writes of x may come as two notices.
		if equal(got, map[string]uint64{"x": 2}) {
			got = next(t, onlyX)
		}
		if !equal(got, map[string]uint64{"x": 3}) {
			t.Fatalf("only x: %v", got)
		}
	}
	if got := next(t, onlyY); !equal(got, map[string]uint64{"y": 2}) {
		t.Fatalf("only y: %v", got)
	}

	if err := onlyX.Close(); err != nil {
		t.Fatal(err)
	}
	if err := onlyX.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := onlyX.Next(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	if err := svcW.Deallocate(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	if got := next(t, onlyY); !equal(got, map[string]uint64{"y": 0}) {
		t.Fatalf("deleted y: %v", got)
	}
	if got := next(t, all); !equal(got, map[string]uint64{"y": 0}) {
		t.Fatalf("all after delete: %v", got)
	}
	quiet(t, onlyY)

	if err := w.DeleteService(ctx, "t", "subs"); err != nil {
		t.Fatal(err)
	}
	got = next(t, all)
	names := make([]string, 0, len(got))
	for n, v := range got {
		if v != 0 {
			t.Fatalf("service deleted: %v", got)
		}
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"x", "z"}) {
		t.Fatalf("service deleted: %v", got)
	}
}

// TestSubscriptionEndsWithClient: without reconnection, a lost broker ends
// the client, its subscriptions and socket requests with ErrDisconnected,
// while a local mapping keeps reading.
func TestSubscriptionEndsWithClient(t *testing.T) {
	h := start(t, broker.Config{})
	c := h.dial(t)
	ctx := ctxT(t)
	svc := service(t, c, "t", "end", map[string][]byte{"v": []byte("kept")})
	sub, err := svc.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := svc.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.stop(t)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client did not end")
	}
	if _, err := sub.Next(ctx); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("Next: %v", err)
	}
	if _, _, err := svc.Read(ctx, "v"); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("read: %v", err)
	}
	if v, _, err := m.Read("v", nil); err != nil || string(v) != "kept" {
		t.Fatalf("mapped read: %q %v", v, err)
	}
}
