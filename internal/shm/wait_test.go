package shm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// A waiter asleep in the kernel on the futex is woken by the next
	// change.
	if got, err := wokenBy(t, m, s0+1, f.Changed); err != nil || got != s0+2 {
		t.Fatalf("woken with %d, %v; want %d", got, err, s0+2)
	}
	// Cancellation ends a wait with nothing changing.
	ctx, cancel := context.WithTimeout(t.Context(), 80*time.Millisecond)
	defer cancel()
	if _, err := m.Wait(ctx, s0+2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline: %v", err)
	}
}

// TestMarkChangedOwesWake: WakeWaiters, without the lock and after any
// number of MarkChanged, pays the wake they owe, on a file just made and on
// one opened again (as at a restart); and it is harmless on a closed file.
func TestMarkChangedOwesWake(t *testing.T) {
	t.Run("created", func(t *testing.T) { owedWake(t, backends[1].create(t, Options{})) })
	t.Run("reopened", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "svc.mem")
		f, err := Create(path, "acme", "orders", Options{})
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if f, err = Open(path); err != nil {
			t.Fatal(err)
		}
		owedWake(t, f)
	})
}

func owedWake(t *testing.T, f *File) {
	m := mapFile(t, f)
	s0 := m.ChangeSeq()
	got, err := wokenBy(t, m, s0, func() {
		f.MarkChanged()
		f.MarkChanged()
		f.WakeWaiters()
	})
	if err != nil || got != s0+2 {
		t.Fatalf("woken with %d, %v; want %d", got, err, s0+2)
	}
	f.MarkChanged()
	f.Close()
	f.WakeWaiters() // the word is unmapped: nothing to wake, no fault
}

// wokenBy starts m.Wait(seq) with a poll slice of an hour, so that only a
// FUTEX_WAKE (or Interrupt) ends it within the test's time, calls act once
// the waiter is asleep in the kernel, and returns what Wait returned. It
// fails the test if act does not wake the waiter.
func wokenBy(t *testing.T, m *Mapping, seq uint32, act func()) (uint32, error) {
	t.Helper()
	m.SetWaitSlice(time.Hour)
	defer m.SetWaitSlice(0)
	type result struct {
		seq uint32
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := m.Wait(context.Background(), seq)
		done <- result{got, err}
	}()
	testutil.WaitFutexSleepers(t, os.Getpid(), 1)
	act()
	select {
	case r := <-done:
		return r.seq, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter was not woken")
		return 0, nil
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
	m.SetWaitSlice(time.Hour) // only the wake ends the wait in time
	seq := m.ChangeSeq()
	fmt.Println("ready", seq)
	got, err := m.Wait(context.Background(), seq) // the parent kills it if it hangs
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
			testutil.WaitFutexSleepers(t, cmd.Process.Pid, 1)
			f.Changed()
			read := make(chan string, 1)
			go func() {
				line, _ := r.ReadString('\n')
				read <- line
			}()
			select {
			case line = <-read:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				cmd.Wait()
				<-read
				t.Fatal("child not woken: no FUTEX_WAKE reached it")
			}
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

// TestInterruptWakesWait: Interrupt ends a Wait asleep in the kernel at once
// (the poll slice is an hour), and every later Wait.
func TestInterruptWakesWait(t *testing.T) {
	f := backends[1].create(t, Options{})
	m := mapFile(t, f)
	if _, err := wokenBy(t, m, m.ChangeSeq(), m.Interrupt); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Wait: %v", err)
	}
	if _, err := m.Wait(context.Background(), m.ChangeSeq()); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Wait after Interrupt: %v", err)
	}
}

// TestMarkDeletedWakesWait: deleting the service wakes a Wait asleep in the
// kernel, and reads fail with ErrServiceDeleted.
func TestMarkDeletedWakesWait(t *testing.T) {
	f := backends[1].create(t, Options{})
	f.Allocate("v", []byte("1"), 0)
	m := mapFile(t, f)
	if _, err := wokenBy(t, m, m.ChangeSeq(), f.MarkDeleted); err != nil && !errors.Is(err, ErrServiceDeleted) {
		t.Fatalf("Wait: %v", err)
	}
	if _, _, err := m.Read("v", nil); !errors.Is(err, ErrServiceDeleted) {
		t.Fatalf("Read after the deletion: %v", err)
	}
	if _, err := m.Wait(context.Background(), m.ChangeSeq()); !errors.Is(err, ErrServiceDeleted) {
		t.Fatalf("Wait after the deletion: %v", err)
	}
}

// TestRepairWakesWait: reopening a file after a crash wakes a Wait asleep in
// the kernel: a change may have been published but never announced.
func TestRepairWakesWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.mem")
	f, err := Create(path, "acme", "orders", Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Allocate("v", []byte("1"), 0)
	m := mapFile(t, f)
	seq := m.ChangeSeq()
	f.Write("v", []byte("2")) // published; the broker dies before Changed
	f.Close()
	var g *File
	defer func() {
		if g != nil {
			g.Close()
		}
	}()
	if _, err := wokenBy(t, m, seq, func() {
		if g, err = Open(path); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}
