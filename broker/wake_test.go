package broker_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
	"github.com/commy/commy/internal/testutil"
)

// TestWakeBeforeStuckReply: the wake of mapped readers is paid after the
// writer's reply when that goes out at once, but never waits behind a reply
// that cannot. A writer sends a write and, in the same batch, a read of a
// value larger than its socket can hold, and then reads nothing; a reader
// asleep on the futex (poll slice an hour, so only FUTEX_WAKE ends it in
// time) must see the write while the writer's replies are stuck.
func TestWakeBeforeStuckReply(t *testing.T) {
	h := start(t, broker.Config{})
	r := h.raw(t, true)
	r.do(&ipc.CreateTenant{TenantID: "acme"})
	r.do(&ipc.CreateService{TenantID: "acme", ServiceName: "svc"})
	r.do(&ipc.AllocateVariable{ServiceID: "acme_svc", VariableName: "v", InitialData: []byte("0")})
	r.do(&ipc.AllocateVariable{ServiceID: "acme_svc", VariableName: "big", InitialData: make([]byte, 4<<20)})
	m := mapAcme(t, r)
	seq := m.ChangeSeq()
	woken := make(chan error, 1)
	go func() {
		_, err := m.Wait(context.Background(), seq)
		woken <- err
	}()
	testutil.WaitFutexSleepers(t, os.Getpid(), 1)

	w := h.raw(t, true)
	var enc ipc.Encoder
	batch, _ := enc.Frame(&ipc.WriteVariable{Header: ipc.Header{ID: 100}, ServiceID: "acme_svc", VariableName: "v", Data: []byte("1")})
	batch = append([]byte(nil), batch...)
	read, _ := enc.Frame(&ipc.ReadVariable{Header: ipc.Header{ID: 101}, ServiceID: "acme_svc", VariableName: "big"})
	if err := w.conn.WriteFrame(append(batch, read...), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woken:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("reader not woken while the writer's reply was stuck")
	}
	if got, _, err := m.Read("v", nil); err != nil || string(got) != "1" {
		t.Fatalf("v = %q, %v after the wake", got, err)
	}
	// The writer's replies are all there once it reads.
	if rep, ok := w.recv().(*ipc.VariableWritten); !ok || rep.ID != 100 {
		t.Fatalf("first reply %#v", rep)
	}
	if rep, ok := w.recv().(*ipc.VariableData); !ok || rep.ID != 101 || len(rep.Data) != 4<<20 {
		t.Fatal("second reply is not the big value")
	}
}

// mapAcme maps the service acme/svc through r, with a wait slice of an
// hour so that only FUTEX_WAKE ends a Wait in time; t closes it.
func mapAcme(t *testing.T, r *raw) *shm.Mapping {
	t.Helper()
	if _, ok := r.do(&ipc.GetServiceFilePath{TenantID: "acme", ServiceName: "svc"}).(*ipc.ServiceFilePath); !ok {
		t.Fatal("no ServiceFilePath")
	}
	f, ok := r.conn.TakeFD()
	if !ok {
		t.Fatal("no descriptor")
	}
	m, err := shm.Map(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.SetWaitSlice(time.Hour)
	return m
}

// TestWakeFirstWhenWatched: when a file's last wake found mapped readers
// asleep, the next write wakes its readers before the writer's reply goes
// out; when it found none, the reply goes first. The hook sees, as each
// reply is about to be written, whether the reader is still asleep.
func TestWakeFirstWhenWatched(t *testing.T) {
	t.Run("reader", func(t *testing.T) { wakeFirstWhenWatched(t) })
	t.Run("loop", func(t *testing.T) {
		t.Cleanup(broker.LoopAlways())
		if h := wakeFirstWhenWatched(t); broker.LoopRequests(h.b) == 0 {
			t.Fatal("the event loop served none of the requests")
		}
	})
}

func wakeFirstWhenWatched(t *testing.T) *harness {
	pid := os.Getpid()
	var mu sync.Mutex
	var asleep []int
	// Undone after the broker has stopped: cleanups run last first.
	t.Cleanup(broker.OnReply(func() {
		n := testutil.SharedFutexSleepers(pid)
		mu.Lock()
		asleep = append(asleep, n)
		mu.Unlock()
	}))
	h := start(t, broker.Config{})
	r := h.raw(t, true)
	r.do(&ipc.CreateTenant{TenantID: "acme"})
	r.do(&ipc.CreateService{TenantID: "acme", ServiceName: "svc"})
	r.do(&ipc.AllocateVariable{ServiceID: "acme_svc", VariableName: "v", InitialData: []byte("0")})
	m := mapAcme(t, r)
	sleep := func() <-chan error {
		seq := m.ChangeSeq()
		woken := make(chan error, 1)
		go func() {
			_, err := m.Wait(context.Background(), seq)
			woken <- err
		}()
		testutil.WaitFutexSleepers(t, pid, 1)
		return woken
	}
	write := func(v string, woken <-chan error) {
		t.Helper()
		if _, ok := r.do(&ipc.WriteVariable{ServiceID: "acme_svc", VariableName: "v", Data: []byte(v)}).(*ipc.VariableWritten); !ok {
			t.Fatalf("write %s: no VariableWritten", v)
		}
		if woken == nil {
			return
		}
		select {
		case err := <-woken:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("write %s: the reader was not woken", v)
		}
	}
	mu.Lock()
	asleep = nil // the set-up's own replies
	mu.Unlock()
	write("1", sleep()) // no wake has found a reader yet: the reply first
	write("2", sleep()) // the last wake found one: the wake first
	write("3", nil)     // the wake first again, and it finds nobody
	write("4", sleep()) // so the reply goes first
	mu.Lock()
	defer mu.Unlock()
	if want := []int{1, 0, 0, 1}; !slices.Equal(asleep, want) {
		t.Fatalf("readers asleep as each reply went out: %v, want %v", asleep, want)
	}
	return h
}
