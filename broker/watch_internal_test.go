package broker

import (
	"errors"
	"slices"
	"testing"
)

// testBudget is an ipc.Budget refusing charges past limit (0: none).
type testBudget struct{ held, limit int }

var errTestBudget = errors.New("over budget")

func (b *testBudget) Charge(n int) error {
	if b.limit > 0 && b.held+n > b.limit {
		return errTestBudget
	}
	b.held += n
	return nil
}

func (b *testBudget) Discharge(n int) { b.held -= n }

func woken(o *outbox) bool {
	select {
	case <-o.wake:
		return true
	default:
		return false
	}
}

// TestOutboxDirect: a notice pushed to an idle outbox goes to the notifier
// to write at once, without waking the writer goroutine; while someone
// writes, notices queue (and merge) for the writer, woken on release, and
// frames the notifier could not write go out before them.
func TestOutboxDirect(t *testing.T) {
	budget := &testBudget{}
	o := newOutbox(budget)
	merged, own, _ := o.push("a", []byte("A1"), []string{"x"}, []uint64{1})
	if merged || !own {
		t.Fatalf("idle outbox: merged %v, own %v", merged, own)
	}
	if woken(&o) {
		t.Fatal("the writer goroutine was woken for a notice the notifier writes")
	}
	// The notifier takes what it writes (deliver).
	o.mu.Lock()
	now := o.takeLocked(nil)
	o.mu.Unlock()
	if len(now) != 1 || now[0].service != "a" {
		t.Fatalf("the notifier took %v", now)
	}
	// While the notifier writes, another notice queues, then merges.
	if _, own, _ := o.push("b", []byte("B1"), []string{"y"}, []uint64{1}); own {
		t.Fatal("a second writer was let in")
	}
	if merged, _, _ := o.push("b", []byte("B2"), []string{"y"}, []uint64{2}); !merged {
		t.Fatal("no merge while busy")
	}
	// The writer goroutine cannot take the outbox while the notifier has it.
	woken(&o)
	if _, _, _, ok := o.take(nil); ok {
		t.Fatal("the writer took a busy outbox")
	}
	// The notifier could not write A1: it goes to the writer, first.
	o.release([]byte("A1"), 1)
	if !woken(&o) {
		t.Fatal("release did not wake the writer with notices queued")
	}
	charged := pendingCost(nil, []string{"y"}) + len("A1") // the merged notice and the frame handed over
	if budget.held != charged {
		t.Fatalf("%d bytes charged for what waits for the writer, want %d", budget.held, charged)
	}
	batch, rest, n, ok := o.take(nil)
	if !ok || string(rest) != "A1" || n != 1 || len(batch) != 1 || batch[0].service != "b" || o.writing != charged {
		t.Fatalf("take: ok %v rest %q n %d batch %v writing %d", ok, rest, n, batch, o.writing)
	}
	if budget.held != charged {
		t.Fatalf("%d bytes charged while the writer writes them, want %d", budget.held, charged)
	}
	if f, _ := batch[0].encode(); f == nil {
		t.Fatal("merged notice does not encode")
	}
	if !slices.Equal(batch[0].order, []string{"y"}) || batch[0].merged["y"] != 2 {
		t.Fatalf("merged notice %+v", batch[0])
	}
	// While the writer has the outbox, notifiers queue.
	if _, own, _ := o.push("c", []byte("C1"), []string{"z"}, []uint64{1}); own {
		t.Fatal("a notifier wrote while the writer goroutine had the outbox")
	}
	o.release(nil, 0)
	if !woken(&o) {
		t.Fatal("release left a queued notice without a writer")
	}
	if want := pendingCost([]byte("C1"), nil); budget.held != want {
		t.Fatalf("%d bytes charged after the writer's release, want %d (the queued notice only)", budget.held, want)
	}
	batch, rest, _, _ = o.take(nil)
	if len(batch) != 1 || rest != nil {
		t.Fatalf("take: %v %q", batch, rest)
	}
	o.release(nil, 0)
	// Handed-over frames keep later notices from the direct path.
	o.release([]byte("X"), 1)
	if _, own, _ := o.push("d", []byte("D1"), []string{"w"}, []uint64{1}); own {
		t.Fatal("a notice overtook frames waiting for the writer")
	}
}

// TestOutboxCharge: what waits for the writer goroutine is charged, a
// notice past the limit is refused (and kept, for the caller to end the
// session), an unsubscribed notice and the session's end give back the rest.
func TestOutboxCharge(t *testing.T) {
	budget := &testBudget{limit: 100}
	o := newOutbox(budget)
	if _, own, err := o.push("a", []byte("A1"), []string{"x"}, []uint64{1}); !own || err != nil || budget.held != 0 {
		t.Fatalf("the direct path: own %v, err %v, %d bytes charged", own, err, budget.held)
	}
	if _, _, err := o.push("b", make([]byte, 60), []string{"y"}, []uint64{1}); err != nil || budget.held != 60 {
		t.Fatalf("queued notice: err %v, %d bytes charged", err, budget.held)
	}
	if _, _, err := o.push("c", make([]byte, 60), []string{"z"}, []uint64{1}); !errors.Is(err, errTestBudget) {
		t.Fatalf("a notice past the limit: err %v", err)
	}
	if len(o.q) != 3 {
		t.Fatalf("%d notices queued, want 3: a refused one is kept", len(o.q))
	}
	o.drop("b")
	if budget.held != 0 {
		t.Fatalf("%d bytes charged after the charged notice was dropped", budget.held)
	}
	if err := o.release([]byte("A1"), 1); err != nil || budget.held != 2 {
		t.Fatalf("handed-over frame: err %v, %d bytes charged", err, budget.held)
	}
	o.settle()
	if budget.held != 0 {
		t.Fatalf("%d bytes charged after the session ended", budget.held)
	}
	if _, _, err := o.push("d", make([]byte, 200), nil, nil); err != nil || budget.held != 0 {
		t.Fatalf("after settle: err %v, %d bytes charged", err, budget.held)
	}
}

// TestOutboxSettleWhileWriting: a session that ends while its writer is
// stuck on the socket gives back at once what the writer took, and the
// writer's release later gives back nothing twice.
func TestOutboxSettleWhileWriting(t *testing.T) {
	budget := &testBudget{}
	o := newOutbox(budget)
	o.push("a", []byte("A1"), []string{"x"}, []uint64{1}) // the notifier owns it
	o.push("b", make([]byte, 60), []string{"y"}, []uint64{1})
	o.release([]byte("A1"), 1)
	if _, _, _, ok := o.take(nil); !ok || budget.held != 62 {
		t.Fatalf("take: ok %v, %d bytes charged, want 62", ok, budget.held)
	}
	o.settle()
	if budget.held != 0 {
		t.Fatalf("%d bytes still charged for what the stuck writer holds", budget.held)
	}
	o.release(nil, 0)
	if budget.held != 0 {
		t.Fatalf("%d bytes charged after the writer's release", budget.held)
	}
}

// TestOutboxRecycle: a notice reused after delivery carries nothing of the
// one before it, merged or charged.
func TestOutboxRecycle(t *testing.T) {
	budget := &testBudget{}
	o := newOutbox(budget)
	o.push("a", []byte("A1"), []string{"x"}, []uint64{1}) // the caller owns the outbox
	if merged, _, _ := o.push("a", []byte("A2"), []string{"y"}, []uint64{2}); !merged {
		t.Fatal("no merge while busy")
	}
	o.mu.Lock()
	batch := o.takeLocked(nil)
	o.mu.Unlock()
	if len(batch) != 1 || batch[0].merged == nil {
		t.Fatalf("took %+v", batch)
	}
	used := batch[0]
	o.recycle(batch)
	o.release(nil, 0)
	if _, own, _ := o.push("b", []byte("B1"), []string{"z"}, []uint64{5}); !own {
		t.Fatal("an idle outbox was not the caller's")
	}
	o.mu.Lock()
	batch = o.takeLocked(nil)
	o.mu.Unlock()
	if len(batch) != 1 || batch[0] != used {
		t.Fatalf("the delivered notice was not reused: %+v", batch)
	}
	f, err := batch[0].encode()
	if err != nil || string(f) != "B1" || batch[0].cost != 0 || batch[0].order != nil {
		t.Fatalf("reused notice %+v encodes %q, %v", batch[0], f, err)
	}
	o.release(nil, 0)
	if budget.held != 0 {
		t.Fatalf("%d bytes still charged", budget.held)
	}
}
