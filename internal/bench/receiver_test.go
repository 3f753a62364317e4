package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commy/commy/internal/ipc"
	"golang.org/x/sys/unix"
)

func TestRespValue(t *testing.T) {
	msg := []byte("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n")
	for _, c := range []struct {
		in   string
		n    int
		last string
	}{
		{"+OK\r\n", 5, "OK"},
		{":42\r\n", 5, "42"},
		{"$5\r\nhello\r\n", 11, "hello"},
		{"$-1\r\n", 5, ""},
		{"*0\r\n", 4, ""},
		{string(msg), len(msg), "hello"},
		{string(msg) + "+next\r\n", len(msg), "hello"},
	} {
		n, last, err := respValue([]byte(c.in))
		if err != nil || n != c.n || string(last) != c.last {
			t.Errorf("respValue(%q) = %d, %q, %v; want %d, %q", c.in, n, last, err, c.n, c.last)
		}
	}
	// Every cut short of the whole message is incomplete, never an error.
	for i := range len(msg) {
		if n, _, err := respValue(msg[:i]); n != 0 || err != nil {
			t.Errorf("respValue of the first %d bytes = %d, %v; want 0, nil", i, n, err)
		}
	}
	for _, in := range []string{"-ERR wrong\r\n", "$x\r\n", "?\r\n", "+OK\n", "*1\r\n$z\r\n"} {
		if _, _, err := respValue([]byte(in)); err == nil {
			t.Errorf("respValue(%q): no error", in)
		}
	}
	if _, _, err := respValue([]byte("-ERR wrong\r\n")); !errors.Is(err, ErrRedis) {
		t.Errorf("an error reply: %v, want ErrRedis", err)
	}
}

// socketPair returns both ends of a Unix stream socket pair; t closes them.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ucs [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		ucs[i] = c.(*net.UnixConn)
		t.Cleanup(func() { ucs[i].Close() })
	}
	return ucs[0], ucs[1]
}

// TestReceiver feeds each kind of subscriber its notices in pieces: a
// notice counts once, when its last byte arrives, however the bytes are
// split, and each is decoded.
func TestReceiver(t *testing.T) {
	big := strings.Repeat("x", 100<<10) // more than one read of the receiver's buffer
	redisMsg := func(v string) []byte {
		return fmt.Appendf(nil, "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$%d\r\n%s\r\n", len(v), v)
	}
	for _, kind := range []string{"commy", "redis"} {
		t.Run(kind, func(t *testing.T) {
			end, peer := socketPair(t)
			var sub Subscriber
			var notice func(i int) []byte
			var decoded func() string
			switch kind {
			case "commy":
				c, err := ipc.NewConn(end, 0, false)
				if err != nil {
					t.Fatal(err)
				}
				s := commySubscriber{&commyConn{c: c}, &ipc.VariablesUpdated{}}
				sub = s
				notice = func(i int) []byte {
					f, err := ipc.EncodeFrame(&ipc.VariablesUpdated{ServiceID: "t/s", Variables: []string{Variable}, Versions: []uint64{uint64(i) << (8 * (i % 8))}})
					if err != nil {
						t.Fatal(err)
					}
					return f
				}
				decoded = func() string { return fmt.Sprint(s.vu.Versions) }
			case "redis":
				nc, err := ipc.NewStream(end)
				if err != nil {
					t.Fatal(err)
				}
				s := &redisConn{nc: nc}
				sub = s
				notice = func(i int) []byte {
					if i == 3 {
						return redisMsg(big)
					}
					return redisMsg(fmt.Sprint(i))
				}
				decoded = func() string { return string(s.bulk) }
			}
			var got atomic.Int64
			var last atomic.Value // what the last notice decoded to, taken on the receiver's goroutine
			r, err := newReceiver([]Subscriber{sub}, func(n int) {
				last.Store(decoded())
				got.Add(int64(n))
			})
			if err != nil {
				t.Fatal(err)
			}
			errs := make(chan error, 1)
			go func() { errs <- r.run() }()
			waitFor := func(want int64) {
				t.Helper()
				for deadline := time.Now().Add(5 * time.Second); got.Load() != want; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("%d notices counted, want %d", got.Load(), want)
					}
				}
			}
			for i := range 6 {
				b := notice(i)
				// The first byte, then all but the last: the notice counts
				// only once its last byte is in.
				for _, piece := range [][]byte{b[:1], b[1 : len(b)-1]} {
					if _, err := peer.Write(piece); err != nil {
						t.Fatal(err)
					}
					time.Sleep(3 * time.Millisecond)
					if n := got.Load(); n != int64(i) {
						t.Fatalf("notice %d counted before its last byte arrived (%d counted)", i, n)
					}
				}
				if _, err := peer.Write(b[len(b)-1:]); err != nil {
					t.Fatal(err)
				}
				waitFor(int64(i + 1))
				want := fmt.Sprint([]uint64{uint64(i) << (8 * (i % 8))})
				if kind == "redis" {
					want = fmt.Sprint(i)
					if i == 3 {
						want = big
					}
				}
				if d := last.Load(); d != want {
					t.Fatalf("notice %d decoded as %.40q, want %.40q", i, d, want)
				}
			}
			// Three at once.
			var three []byte
			for i := range 3 {
				three = append(three, notice(10+i)...)
			}
			peer.Write(three)
			waitFor(9)
			// The server closing the connection ends the run with an error.
			peer.Close()
			select {
			case err := <-errs:
				if err == nil {
					t.Error("the run ended without an error when the connection closed")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the run did not end when the connection closed")
			}
		})
	}
}

// TestReceiverStop: a run stops when told, with no error.
func TestReceiverStop(t *testing.T) {
	end, _ := socketPair(t)
	nc, err := ipc.NewStream(end)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newReceiver([]Subscriber{&redisConn{nc: nc}}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	go func() { errs <- r.run() }()
	r.stop()
	select {
	case err := <-errs:
		if err != nil {
			t.Errorf("stopped run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the run did not stop")
	}
}
