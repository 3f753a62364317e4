package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// countBudget records what a Conn charges and refuses past limit.
type countBudget struct {
	mu           sync.Mutex
	held, peak   int
	limit        int
	refused      int
	dischargeErr bool
}

func (b *countBudget) Charge(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 && b.held+n > b.limit {
		b.refused++
		return fmt.Errorf("%w: test budget", ErrQuotaExceeded)
	}
	b.held += n
	b.peak = max(b.peak, b.held)
	return nil
}

func (b *countBudget) Discharge(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
	if b.held < 0 {
		b.dischargeErr = true
	}
}

func (b *countBudget) get() (held, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.peak
}

// TestBufferGrowsWithBytesReceived: a frame that declares 16 MiB but sends
// 100 KiB costs the reader about what arrived, not what was declared.
func TestBufferGrowsWithBytesReceived(t *testing.T) {
	a, b := pair(t, 0, false)
	budget := &countBudget{}
	b.SetBudget(budget)
	b.SetReadTimeouts(0, 300*time.Millisecond)
	const declared, sent = 16 << 20, 100 << 10
	hdr := binary.BigEndian.AppendUint32(nil, declared)
	if err := a.WriteFrame(append(hdr, make([]byte, sent)...), nil); err != nil {
		t.Fatal(err)
	}
	_, err := b.ReadFrame()
	if !errors.Is(err, ErrFrameTimeout) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("read: %v, want ErrFrameTimeout", err)
	}
	_, peak := budget.get()
	if peak > 2*sent+minReadBuf || len(b.rbuf) > 2*sent+2*minReadBuf {
		t.Fatalf("buffer charged %d (len %d) for %d bytes received", peak, len(b.rbuf), sent)
	}
	b.ReleaseBuffer()
	if held, _ := budget.get(); held != 0 || budget.dischargeErr {
		t.Fatalf("after release %d still charged", held)
	}
}

// TestBufferBudgetRefuses: a full budget stops the read with
// ErrQuotaExceeded; a whole frame within it is read and its memory returned.
func TestBufferBudgetRefuses(t *testing.T) {
	a, b := pair(t, 0, false)
	budget := &countBudget{limit: 256 << 10}
	b.SetBudget(budget)
	small := make([]byte, 200<<10)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(small)))
	go a.WriteFrame(append(frame, small...), nil)
	body, err := b.ReadFrame()
	if err != nil || len(body) != len(small) {
		t.Fatalf("read %d bytes: %v", len(body), err)
	}
	big := make([]byte, 1<<20)
	frame = binary.BigEndian.AppendUint32(nil, uint32(len(big)))
	go a.WriteFrame(append(frame, big...), nil)
	if _, err := b.ReadFrame(); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("read: %v, want ErrQuotaExceeded", err)
	}
	if held, _ := budget.get(); held > 256<<10 {
		t.Fatalf("held %d past the limit", held)
	}
	a.Close() // unblock the writer
	b.ReleaseBuffer()
	if held, _ := budget.get(); held != 0 {
		t.Fatalf("after release %d still charged", held)
	}
}

// TestIdleTimeout: silence ends ReadFrame with ErrIdle no sooner than the
// idle time, and the connection keeps working afterwards.
func TestIdleTimeout(t *testing.T) {
	a, b := pair(t, 0, false)
	const idle = 200 * time.Millisecond
	b.SetReadTimeouts(idle, time.Second)
	start := time.Now()
	if _, err := b.ReadFrame(); !errors.Is(err, ErrIdle) {
		t.Fatalf("read: %v, want ErrIdle", err)
	}
	if d := time.Since(start); d < idle {
		t.Fatalf("idle after %v, before %v", d, idle)
	}
	// Traffic for longer than the idle time, each gap shorter: never idle.
	go func() {
		for i := 0; i < 6; i++ {
			time.Sleep(idle / 2)
			a.WriteFrame([]byte{0, 0, 0, 1, byte(i)}, nil)
		}
	}()
	for i := 0; i < 6; i++ {
		body, err := b.ReadFrame()
		if err != nil || body[0] != byte(i) {
			t.Fatalf("frame %d: %v %v", i, body, err)
		}
	}
}

// TestBufferGrowsForBursts: the read buffer stays small while frames come
// one at a time, and doubles (up to burstReadBuf) when a read fills it, so a
// burst of pipelined frames is read in few calls.
func TestBufferGrowsForBursts(t *testing.T) {
	a, b := pair(t, 1<<20, false)
	frame := binary.BigEndian.AppendUint32(nil, 60)
	frame = append(frame, make([]byte, 60)...)
	for range 100 {
		if err := a.WriteFrame(frame, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.rbuf) != minReadBuf {
		t.Fatalf("one frame at a time: buffer of %d bytes, want %d", len(b.rbuf), minReadBuf)
	}
	var burst []byte
	for range 200 { // 12800 bytes
		burst = append(burst, frame...)
	}
	if err := a.WriteFrame(burst, nil); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if _, err := b.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.rbuf) != burstReadBuf {
		t.Fatalf("after a burst: buffer of %d bytes, want %d", len(b.rbuf), burstReadBuf)
	}
}
