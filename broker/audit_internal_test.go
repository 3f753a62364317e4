package broker

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// countingFile is an audit file that records its writes.
type countingFile struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	block  chan struct{} // when set, each write waits for a receive
}

func (f *countingFile) Write(p []byte) (int, error) {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	return f.buf.Write(p)
}

func (f *countingFile) Close() error { return nil }

func (f *countingFile) state() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes, bytes.Count(f.buf.Bytes(), []byte("\n"))
}

// TestAuditFlushesAlone: one record, and nothing after it, still reaches the
// file without Close, through the timer the first record arms.
func TestAuditFlushesAlone(t *testing.T) {
	f := &countingFile{}
	a := newAudit(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer a.Close()
	a.Log(Record{Event: EventConnect})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, lines := f.state(); lines == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lone record did not reach the file in 10s")
		}
		time.Sleep(time.Millisecond)
	}
	// A second record after the writer went idle arms the timer again.
	a.Log(Record{Event: EventDisconnect})
	for {
		if _, lines := f.state(); lines == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second record did not reach the file in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAuditBatches: records logged one after another, a little apart, are
// written in a few batches, not one write (and one writer wake-up) each.
func TestAuditBatches(t *testing.T) {
	f := &countingFile{}
	a := newAudit(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	const n = 400
	for range n {
		a.Log(Record{Event: EventWrite, ServiceID: "t_s", Variables: []string{"v"}})
		for t0 := time.Now(); time.Since(t0) < 50*time.Microsecond; {
			// a request's worth of other work, without sleeping
		}
	}
	a.Close()
	writes, lines := f.state()
	if lines != n {
		t.Fatalf("%d records written, want %d", lines, n)
	}
	if writes > n/10 {
		t.Fatalf("%d records took %d writes", n, writes)
	}
	t.Logf("%d records in %d writes", n, writes)
}

// TestAuditSharesWrites: records a millisecond or two apart, as a broker
// logs the writes of a client that writes every few milliseconds, share
// writes: the writer is not woken once per record.
func TestAuditSharesWrites(t *testing.T) {
	f := &countingFile{}
	a := newAudit(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	const n = 40
	t0 := time.Now()
	for range n {
		a.Log(Record{Event: EventWrite, ServiceID: "t_s", Variables: []string{"v"}})
		time.Sleep(time.Millisecond)
	}
	took := time.Since(t0)
	a.Close()
	writes, lines := f.state()
	if lines != n {
		t.Fatalf("%d records written, want %d", lines, n)
	}
	// About one write per 20 ms, and the one Close makes; a writer woken
	// 2 ms after each record writes about every 2 ms.
	if limit := int(took/(10*time.Millisecond)) + 2; writes > limit {
		t.Fatalf("%d records over %v took %d writes, want at most %d", n, took, writes, limit)
	}
	t.Logf("%d records over %v in %d writes", n, took, writes)
}

// TestAuditQueueBound: with the file stuck, Log blocks once the queue is
// full instead of growing it or dropping records, and every record is
// written once the file moves again.
func TestAuditQueueBound(t *testing.T) {
	f := &countingFile{block: make(chan struct{})}
	a := newAudit(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	logged := make(chan int, 1)
	const n = 3 * auditQueueLength
	go func() {
		for i := range n {
			a.Log(Record{Event: EventWrite, Bytes: i})
		}
		logged <- n
	}()
	// The writer takes at most one queue's worth and blocks writing it; Log
	// can then fill one more queue and must wait.
	time.Sleep(100 * time.Millisecond)
	select {
	case <-logged:
		t.Fatal("Log did not block with the file stuck and the queue full")
	default:
	}
	a.mu.Lock()
	q := len(a.q)
	a.mu.Unlock()
	if q > auditQueueLength {
		t.Fatalf("queue holds %d records, bound %d", q, auditQueueLength)
	}
	close(f.block)
	<-logged
	a.Close()
	if _, lines := f.state(); lines != n {
		t.Fatalf("%d records written, want %d", lines, n)
	}
}

// bufWriter records the first byte's address of every buffer written.
type bufWriter struct {
	mu    sync.Mutex
	addrs []*byte
	wrote chan struct{}
}

func (w *bufWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.addrs = append(w.addrs, &p[0])
	w.mu.Unlock()
	w.wrote <- struct{}{}
	return len(p), nil
}

func (w *bufWriter) Close() error { return nil }

// TestAuditReusesBuffer: the audit writer encodes every batch into the same
// buffer (it was shadowed inside the loop, so each batch allocated anew).
func TestAuditReusesBuffer(t *testing.T) {
	w := &bufWriter{wrote: make(chan struct{}, 1)}
	a := newAudit(w, slog.New(slog.DiscardHandler))
	for i := 0; i < 5; i++ {
		a.Log(Record{Event: EventConnect, ClientID: uint64(i + 1)}) // the same length
		<-w.wrote                                                   // one record per batch
	}
	a.Close()
	for i, p := range w.addrs[1:] {
		if p != w.addrs[0] {
			t.Fatalf("batch %d written from a new buffer", i+1)
		}
	}
}
