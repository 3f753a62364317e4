package ipc

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestStream: bytes written on one end of a socket pair arrive whole on the
// other, a write larger than the socket holds waits for the reader (the
// poller path), and the reader sees EOF once the writer closes.
func TestStream(t *testing.T) {
	a, b := pair(t, 0, false)
	w, err := NewStream(a.UnixConn())
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewStream(b.UnixConn())
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than the socket holds
	done := make(chan error, 1)
	go func() {
		n, err := w.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		w.Close()
		done <- err
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
	r.Close()
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}
