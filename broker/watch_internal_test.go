package broker

import (
	"slices"
	"testing"
)

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
	o := newOutbox()
	merged, own := o.push("a", []byte("A1"), []string{"x"}, []uint64{1})
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
	if _, own := o.push("b", []byte("B1"), []string{"y"}, []uint64{1}); own {
		t.Fatal("a second writer was let in")
	}
	if merged, _ := o.push("b", []byte("B2"), []string{"y"}, []uint64{2}); !merged {
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
	batch, rest, n, ok := o.take(nil)
	if !ok || string(rest) != "A1" || n != 1 || len(batch) != 1 || batch[0].service != "b" {
		t.Fatalf("take: ok %v rest %q n %d batch %v", ok, rest, n, batch)
	}
	if f, _ := batch[0].encode(); f == nil {
		t.Fatal("merged notice does not encode")
	}
	if !slices.Equal(batch[0].order, []string{"y"}) || batch[0].merged["y"] != 2 {
		t.Fatalf("merged notice %+v", batch[0])
	}
	// While the writer has the outbox, notifiers queue.
	if _, own := o.push("c", []byte("C1"), []string{"z"}, []uint64{1}); own {
		t.Fatal("a notifier wrote while the writer goroutine had the outbox")
	}
	o.release(nil, 0)
	if !woken(&o) {
		t.Fatal("release left a queued notice without a writer")
	}
	batch, rest, _, _ = o.take(nil)
	if len(batch) != 1 || rest != nil {
		t.Fatalf("take: %v %q", batch, rest)
	}
	o.release(nil, 0)
	// Handed-over frames keep later notices from the direct path.
	o.release([]byte("X"), 1)
	if _, own := o.push("d", []byte("D1"), []string{"w"}, []uint64{1}); own {
		t.Fatal("a notice overtook frames waiting for the writer")
	}
}
