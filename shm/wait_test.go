package shm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/internal/testutil"
)

func TestWait(t *testing.T) {
	f := backends[1].create(t, Options{})
	m := mapFile(t, f)
	s0 := m.ChangeSeq()
	f.Changed()
	// A change made before Wait returns at once.
	if got, err := m.Wait(t.Context(), s0); err != nil || got != s0+1 {
		t.Fatalf("Wait after a change: %d %v", got, err)
	}
	// A waiter sleeping on the futex is woken by the next change.
	done := make(chan uint32)
	go func() {
		got, err := m.Wait(context.Background(), s0+1)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	time.Sleep(100 * time.Millisecond) // let it reach the futex
	f.Changed()
	select {
	case got := <-done:
		if got != s0+2 {
			t.Fatalf("woken with %d, want %d", got, s0+2)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken")
	}
	// Cancellation ends a wait with nothing changing.
	ctx, cancel := context.WithTimeout(t.Context(), 80*time.Millisecond)
	defer cancel()
	if _, err := m.Wait(ctx, s0+2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline: %v", err)
	}
}

// waitChild maps the service file passed as fd 3, says "ready <seq>", waits
// for a change and prints the new sequence.
func waitChild() int {
	m, err := Map(os.NewFile(3, "service"))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer m.Close()
	seq := m.ChangeSeq()
	fmt.Println("ready", seq)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := m.Wait(ctx, seq)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println(got)
	return 0
}

// TestWaitAcrossProcesses: a process running as another user, holding only
// a read-only mapping, is woken by the writer's change through the futex.
func TestWaitAcrossProcesses(t *testing.T) {
	testutil.RequireRoot(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			f := be.create(t, Options{})
			ro, err := f.OpenReadOnly()
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			cmd := testutil.Child(t, "wait", testutil.Nobody, testutil.Nobody)
			cmd.ExtraFiles = []*os.File{ro}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(out)
			line, _ := r.ReadString('\n')
			seq, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(line), "ready "), 10, 32)
			if err != nil {
				cmd.Wait()
				t.Fatalf("child said %q", line)
			}
			time.Sleep(100 * time.Millisecond) // let it reach the futex
			f.Changed()
			line, _ = r.ReadString('\n')
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v (%q)", err, line)
			}
			if strings.TrimSpace(line) != strconv.FormatUint(seq+1, 10) {
				t.Fatalf("child woke with %q, want %d", line, seq+1)
			}
		})
	}
}

// BenchmarkChanged is what every applied change pays to wake watchers when
// nobody waits.
func BenchmarkChanged(b *testing.B) {
	f, err := CreateMemfd("b", "s", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < b.N; i++ {
		f.Changed()
	}
}

// BenchmarkWakeRoundTrip measures two goroutines taking turns through two
// files' futexes: the latency of a change reaching a mapped watcher.
func BenchmarkWakeRoundTrip(b *testing.B) {
	ping, err := CreateMemfd("b", "ping", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer ping.Close()
	pong, err := CreateMemfd("b", "pong", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer pong.Close()
	mp, mq := mapFileB(b, ping), mapFileB(b, pong)
	ctx := context.Background()
	pseq := mp.ChangeSeq() // before the first ping
	go func() {
		seq := pseq
		for i := 0; i < b.N; i++ {
			seq, _ = mp.Wait(ctx, seq)
			pong.Changed()
		}
	}()
	seq := mq.ChangeSeq()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ping.Changed()
		seq, _ = mq.Wait(ctx, seq)
	}
}

func mapFileB(b *testing.B, f *File) *Mapping {
	ro, err := f.OpenReadOnly()
	if err != nil {
		b.Fatal(err)
	}
	m, err := Map(ro)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}
