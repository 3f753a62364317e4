package client_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
)

// TestWorkingCopySync edits 3 of 100 variables; Sync must report exactly
// those, in one ReportVariableChanges: another client gets one notice naming
// them and sees the new bytes through its mapping.
func TestWorkingCopySync(t *testing.T) {
	h := start(t, broker.Config{})
	a, b := h.dial(t), h.dial(t)
	ctx := ctxT(t)
	vars := map[string][]byte{}
	for i := 0; i < 100; i++ {
		vars[varName(i)] = bytes.Repeat([]byte{byte(i)}, 64)
	}
	svcA := service(t, a, "t", "wc", vars)
	svcB, err := b.Service(ctx, "t", "wc")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := svcB.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	mB, err := svcB.Map(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mB.Close()

	wc, err := svcA.WorkingCopy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	if !wc.Local() || len(wc.Names()) != 100 {
		t.Fatalf("local %v, %d variables", wc.Local(), len(wc.Names()))
	}
	if names, err := wc.Sync(ctx); err != nil || names != nil {
		t.Fatalf("clean Sync sent %v, %v", names, err)
	}
	before, err := a.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// v041's last byte and v042's first are adjacent: one changed range
	// across two variables.
	wc.Bytes("v007")[10] ^= 0xff
	wc.Bytes("v041")[63] ^= 0xff
	wc.Bytes("v042")[0] ^= 0xff
	want := []string{"v007", "v041", "v042"}
	if d := wc.Dirty(); !slices.Equal(d, want) {
		t.Fatalf("dirty %v, want %v", d, want)
	}
	sent, err := wc.Sync(ctx)
	if err != nil || !slices.Equal(sent, want) {
		t.Fatalf("Sync sent %v, %v; want %v", sent, err, want)
	}
	if d := wc.Dirty(); len(d) != 0 {
		t.Fatalf("dirty after Sync: %v", d)
	}
	if got := next(t, sub); !equal(got, map[string]uint64{"v007": 2, "v041": 2, "v042": 2}) {
		t.Fatalf("notice %v", got)
	}
	quiet(t, sub)
	after, err := a.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := after.NoticesSent - before.NoticesSent; n != 1 || after.NoticesMerged != before.NoticesMerged {
		t.Fatalf("%d notices sent (%d merged), want 1", n, after.NoticesMerged-before.NoticesMerged)
	}
	if n := after.Requests["ReportVariableChanges"] - before.Requests["ReportVariableChanges"]; n != 1 {
		t.Fatalf("%d reports", n)
	}
	for i := 0; i < 100; i++ {
		name := varName(i)
		got, _, err := mB.Read(name, nil)
		if err != nil || !bytes.Equal(got, wc.Bytes(name)) {
			t.Fatalf("%s: B maps %x, %v; A has %x", name, got, err, wc.Bytes(name))
		}
	}
	if sent, err := wc.Sync(ctx); err != nil || sent != nil {
		t.Fatalf("second Sync sent %v, %v", sent, err)
	}
}

// TestWorkingCopyRefresh: Refresh keeps a dirty local edit and takes other
// clients' changes into clean variables, re-laying out the copy when they
// added, removed or resized variables.
func TestWorkingCopyRefresh(t *testing.T) {
	h := start(t, broker.Config{})
	a, b := h.dial(t), h.dial(t)
	ctx := ctxT(t)
	svcA := service(t, a, "t", "ref", map[string][]byte{
		"a": []byte("aaaaaaaa"), "b": []byte("bbbbbbbb"), "c": []byte("cccc"), "e": []byte("eeee"), "z": nil,
	})
	svcB, err := b.Service(ctx, "t", "ref")
	if err != nil {
		t.Fatal(err)
	}
	wc, err := svcA.WorkingCopy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()

	copy(wc.Bytes("a"), "LOCAL-a!")
	for n, v := range map[string]string{"a": "remote-a", "b": "remote-b"} {
		if _, err := svcB.Write(ctx, n, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	changed, err := wc.Refresh(ctx)
	if err != nil || !slices.Equal(changed, []string{"b"}) {
		t.Fatalf("refresh changed %v, %v", changed, err)
	}
	if string(wc.Bytes("a")) != "LOCAL-a!" || string(wc.Bytes("b")) != "remote-b" {
		t.Fatalf("a %q b %q", wc.Bytes("a"), wc.Bytes("b"))
	}
	if d := wc.Dirty(); !slices.Equal(d, []string{"a"}) {
		t.Fatalf("dirty %v", d)
	}

	// Layout changes elsewhere: c grows, d appears, e goes.
	if _, err := svcB.Write(ctx, "c", []byte("cccccccccccccccccccc")); err != nil {
		t.Fatal(err)
	}
	if _, err := svcB.Allocate(ctx, "d", []byte("dd"), 0); err != nil {
		t.Fatal(err)
	}
	if err := svcB.Deallocate(ctx, "e"); err != nil {
		t.Fatal(err)
	}
	changed, err = wc.Refresh(ctx)
	if err != nil || !slices.Equal(changed, []string{"c", "d", "e"}) {
		t.Fatalf("refresh changed %v, %v", changed, err)
	}
	if !slices.Equal(wc.Names(), []string{"a", "b", "c", "d", "z"}) {
		t.Fatalf("names %v", wc.Names())
	}
	if string(wc.Bytes("c")) != "cccccccccccccccccccc" || string(wc.Bytes("d")) != "dd" || wc.Bytes("e") != nil || len(wc.Bytes("z")) != 0 {
		t.Fatalf("c %q d %q e %q", wc.Bytes("c"), wc.Bytes("d"), wc.Bytes("e"))
	}
	if string(wc.Bytes("a")) != "LOCAL-a!" || !slices.Equal(wc.Dirty(), []string{"a"}) {
		t.Fatalf("a %q, dirty %v", wc.Bytes("a"), wc.Dirty())
	}
	sent, err := wc.Sync(ctx)
	if err != nil || !slices.Equal(sent, []string{"a"}) {
		t.Fatalf("Sync sent %v, %v", sent, err)
	}
	if v, _, err := svcB.Read(ctx, "a"); err != nil || string(v) != "LOCAL-a!" {
		t.Fatalf("B reads a = %q, %v", v, err)
	}
}

// TestWorkingCopyDirty checks how changed bytes map to variables: ranges at
// either end of a variable, across several, and past empty variables.
func TestWorkingCopyDirty(t *testing.T) {
	h := start(t, broker.Config{})
	c := h.dial(t)
	// Laid out by name: a[0,3) b[3,3) c[3,4) d[4,9) e[9,9) f[9,12)
	svc := service(t, c, "t", "dirty", map[string][]byte{
		"a": []byte("aaa"), "b": nil, "c": []byte("c"), "d": []byte("ddddd"), "e": nil, "f": []byte("fff"),
	})
	wc, err := svc.WorkingCopy(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	for _, tc := range []struct {
		name  string
		edits map[string][]int // variable: byte indexes
		want  []string
	}{
		{"none", nil, nil},
		{"first byte", map[string][]int{"a": {0}}, []string{"a"}},
		{"last byte", map[string][]int{"f": {2}}, []string{"f"}},
		{"across an empty one", map[string][]int{"a": {2}, "c": {0}}, []string{"a", "c"}},
		{"three in a row", map[string][]int{"c": {0}, "d": {0, 1, 2, 3, 4}, "f": {0}}, []string{"c", "d", "f"}},
		{"inside", map[string][]int{"d": {2}}, []string{"d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for n, idx := range tc.edits {
				for _, i := range idx {
					wc.Bytes(n)[i] ^= 0x55
				}
			}
			if d := wc.Dirty(); !slices.Equal(d, tc.want) {
				t.Errorf("dirty %v, want %v", d, tc.want)
			}
			for n, idx := range tc.edits {
				for _, i := range idx {
					wc.Bytes(n)[i] ^= 0x55
				}
			}
		})
	}
}

// TestWorkingCopyWatch: the Watch goroutine syncs local edits and takes
// other clients' changes, and stops on Close.
func TestWorkingCopyWatch(t *testing.T) {
	h := start(t, broker.Config{})
	a, b := h.dial(t), h.dial(t)
	ctx := ctxT(t)
	svcA := service(t, a, "t", "watch", map[string][]byte{"mine": []byte("0000"), "theirs": []byte("0000")})
	svcB, err := b.Service(ctx, "t", "watch")
	if err != nil {
		t.Fatal(err)
	}
	wc, err := svcA.WorkingCopy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	if err := wc.Watch(ctx, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := wc.Watch(ctx, 10*time.Millisecond); err == nil {
		t.Fatal("second Watch started")
	}
	wc.Lock()
	copy(wc.Bytes("mine"), "1111")
	wc.Unlock()
	if _, err := svcB.Write(ctx, "theirs", []byte("2222")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, _, err := svcB.Read(ctx, "mine")
		if err != nil {
			t.Fatal(err)
		}
		wc.Lock()
		theirs := string(wc.Bytes("theirs"))
		wc.Unlock()
		if string(v) == "1111" && theirs == "2222" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B reads mine %q, A has theirs %q; watch error %v", v, theirs, wc.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := wc.Err(); err != nil {
		t.Fatal(err)
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wc.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := wc.Watch(ctx, time.Millisecond); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
}
