package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"syscall"
	"testing"

	"github.com/commy/commy/internal/testutil"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }

// pair returns two connected Conns over a real socketpair.
func pair(t testing.TB, maxFrame int, allowFDs bool) (*Conn, *Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fd int) *Conn {
		f := os.NewFile(uintptr(fd), "sock")
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewConn(nc.(*net.UnixConn), maxFrame, allowFDs)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); c.ReleaseFDs() })
		return c
	}
	return mk(fds[0]), mk(fds[1])
}

func TestFrameRoundTrip(t *testing.T) {
	a, b := pair(t, 1<<20, true)
	var enc Encoder
	msgs := []Message{
		&Hello{Header: Header{ID: 1}, Protocol: 1, ClientName: "x"},
		&WriteVariable{Header: Header{ID: 2}, ServiceID: "a_b", VariableName: "v", Data: bytes.Repeat([]byte{7}, 100000)},
		&ReportVariableChanges{Header: Header{ID: 3}, ServiceID: "a_b", ChangedVariables: []string{"v"}, NewValues: []NamedValue{{Name: "v", Value: []byte{}}}},
		&VariablesUpdated{ServiceID: "a_b", Variables: []string{"v", "w"}, Versions: []uint64{3, 0}},
	}
	var frames [][]byte
	for _, m := range msgs {
		f, err := enc.Frame(m)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, append([]byte(nil), f...))
	}
	go func() {
		for _, f := range frames {
			if err := a.WriteFrame(f, nil); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for _, want := range msgs {
		body, err := b.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		got, h, err := Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		if h.Type != want.Kind() || h.ID != want.Hdr().ID {
			t.Fatalf("header %+v for %s", h, want.Kind())
		}
		wf, _ := EncodeFrame(want)
		gf, _ := EncodeFrame(got)
		if !bytes.Equal(wf, gf) {
			t.Fatalf("%s: round trip changed the message", want.Kind())
		}
	}
}

// TestWireExample pins the exact bytes of the frame shown in docs/protocol.md.
func TestWireExample(t *testing.T) {
	f, err := EncodeFrame(&Hello{Header: Header{ID: 1}, Protocol: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x00, 0x00, 0x00, 0x1a, // length 26
		0xa3,                                                    // map(3)
		0x64, 't', 'y', 'p', 'e', 0x65, 'H', 'e', 'l', 'l', 'o', // "type": "Hello"
		0x62, 'i', 'd', 0x01, // "id": 1
		0x68, 'p', 'r', 'o', 't', 'o', 'c', 'o', 'l', 0x01, // "protocol": 1
	}
	if !bytes.Equal(f, want) {
		t.Fatalf("frame\n% x\nwant\n% x", f, want)
	}
}

// TestDecodeKeyOrder checks that a body whose keys come in another order than
// this package writes them (as other languages' encoders may) decodes to the
// same message, and that a failed decode still yields the request id.
func TestDecodeKeyOrder(t *testing.T) {
	want := &ReadVariable{Header: Header{Type: "ReadVariable", ID: 7}, ServiceID: "s1", VariableName: "v"}
	ours, err := EncodeFrame(want)
	if err != nil {
		t.Fatal(err)
	}
	det, err := cbor.CoreDetEncOptions().EncMode() // sorts "id" before "type"
	if err != nil {
		t.Fatal(err)
	}
	sorted, err := det.Marshal(map[string]any{"type": "ReadVariable", "id": 7, "service_id": "s1", "variable_name": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if _, fast := peekType(sorted); fast {
		t.Fatal("a body starting with \"id\" took the fast path")
	}
	if _, fast := peekType(ours[HeaderLen:]); !fast {
		t.Fatal("a body as Encoder writes it did not take the fast path")
	}
	for _, body := range [][]byte{ours[HeaderLen:], sorted} {
		m, h, err := Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m, want) || h != want.Header {
			t.Fatalf("decoded %+v %+v, want %+v", m, h, want)
		}
	}

	type bad struct {
		Type      string `cbor:"type"`
		ID        int    `cbor:"id"`
		ServiceID any    `cbor:"service_id,omitempty"`
	}
	for _, b := range []bad{{"NoSuchThing", 9, nil}, {"ReadVariable", 9, 3}} {
		for _, enc := range []cbor.EncMode{encMode, det} {
			body, err := enc.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			if _, h, err := Decode(body); err == nil || h.ID != 9 {
				t.Fatalf("%v: header %+v, err %v; want an error with id 9", b, h, err)
			}
		}
	}
}

// TestDecodeInto: a body decodes into a reused message of its type, which
// keeps its slices' memory; a body of another type is refused.
func TestDecodeInto(t *testing.T) {
	var enc Encoder
	var m VariablesUpdated
	for i, want := range []VariablesUpdated{
		{Header: Header{Type: "VariablesUpdated"}, ServiceID: "t_s", Variables: []string{"a", "b"}, Versions: []uint64{3, 4}},
		{Header: Header{Type: "VariablesUpdated"}, ServiceID: "t_s", Variables: []string{"c"}, Versions: []uint64{5}},
	} {
		f, err := enc.Frame(&want)
		if err != nil {
			t.Fatal(err)
		}
		if err := DecodeInto(f[HeaderLen:], &m); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("decode %d: %+v, want %+v", i, m, want)
		}
	}
	f, err := enc.Frame(&Welcome{Header: Header{ID: 1}, Protocol: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := DecodeInto(f[HeaderLen:], &m); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("a Welcome into a VariablesUpdated: %v", err)
	}
}

func TestFrameLimits(t *testing.T) {
	a, b := pair(t, 64, true)
	hdr := binary.BigEndian.AppendUint32(nil, 65)
	a.WriteFrame(hdr, nil)
	if _, err := b.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	a2, b2 := pair(t, 64, true)
	a2.WriteFrame([]byte{0, 0, 0, 0}, nil)
	if _, err := b2.ReadFrame(); !errors.Is(err, ErrEmptyFrame) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("empty: %v", err)
	}
	a3, b3 := pair(t, 64, true)
	a3.WriteFrame([]byte{0, 0, 0, 10, 1, 2}, nil)
	a3.Close()
	if _, err := b3.ReadFrame(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestFDPassing(t *testing.T) {
	a, b := pair(t, 0, true)
	var files []*os.File
	for i := 0; i < 3; i++ {
		f, err := os.CreateTemp(t.TempDir(), "fd")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(string(rune('a' + i)))
		files = append(files, f)
		defer f.Close()
	}
	for i, f := range files {
		frame, _ := EncodeFrame(&Heartbeat{Header: Header{ID: uint64(i + 1)}})
		if err := a.WriteFrame(frame, f); err != nil {
			t.Fatal(err)
		}
	}
	for i := range files {
		if _, err := b.ReadFrame(); err != nil {
			t.Fatal(err)
		}
		got, ok := b.TakeFD()
		if !ok {
			t.Fatalf("frame %d: no descriptor", i)
		}
		buf := make([]byte, 1)
		got.ReadAt(buf, 0)
		got.Close()
		if buf[0] != byte('a'+i) {
			t.Fatalf("descriptor %d is file %q", i, buf)
		}
	}
}

func TestUnexpectedFD(t *testing.T) {
	a, b := pair(t, 0, false)
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	frame, _ := EncodeFrame(&Heartbeat{Header: Header{ID: 1}})
	a.WriteFrame(frame, r)
	if _, err := b.ReadFrame(); !errors.Is(err, ErrUnexpectedFD) {
		t.Fatalf("got %v", err)
	}
}

func TestTooManyFDs(t *testing.T) {
	a, b := pair(t, 0, true)
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	frame, _ := EncodeFrame(&Heartbeat{Header: Header{ID: 1}})
	var err error
	for i := 0; i <= maxQueuedFDs && err == nil; i++ {
		a.WriteFrame(frame, r)
		_, err = b.ReadFrame()
	}
	if !errors.Is(err, ErrTooManyFDs) {
		t.Fatalf("got %v", err)
	}
}

func TestErrorCodes(t *testing.T) {
	for _, c := range Codes() {
		if CodeOf(ErrorOf(c)) != c {
			t.Errorf("%s does not round-trip", c)
		}
		re := &RemoteError{Code: c, Message: "m"}
		if !errors.Is(re, ErrorOf(c)) {
			t.Errorf("RemoteError %s does not match its sentinel", c)
		}
	}
	if CodeOf(syscall.EIO) != "INTERNAL_ERROR" || ErrorOf("NOPE") != nil {
		t.Error("unknown errors")
	}
	if len(Codes()) != 18 {
		t.Errorf("%d codes", len(Codes()))
	}
}

func TestPeerCred(t *testing.T) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: t.TempDir() + "/s", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cr, err := PeerCred(s)
	if err != nil || int(cr.PID) != os.Getpid() || int(cr.UID) != os.Getuid() || int(cr.GID) != os.Getgid() {
		t.Fatalf("%+v %v", cr, err)
	}
}

// TestFramingAllocs: reading and writing frames allocates nothing once the
// buffers are warm.
func TestFramingAllocs(t *testing.T) {
	a, b := pair(t, 0, true)
	frame, _ := EncodeFrame(&Heartbeat{Header: Header{ID: 1}})
	const n = 500
	// One write: every small write costs the socket buffer far more than its
	// bytes, and the reader does not run until AllocsPerRun.
	if err := a.WriteFrame(bytes.Repeat(frame, n+10), nil); err != nil {
		t.Fatal(err)
	}
	b.ReadFrame()
	if got := testing.AllocsPerRun(n, func() {
		if _, err := b.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}); got != 0 {
		t.Errorf("ReadFrame: %v allocations", got)
	}
	var enc Encoder
	m := &Heartbeat{Header: Header{ID: 1}}
	enc.Frame(m)
	if got := testing.AllocsPerRun(100, func() { enc.Frame(m) }); got != 0 {
		t.Errorf("Encoder.Frame: %v allocations", got)
	}
}

// TestCloseClosesReceivedFDs: Close closes descriptors received and not
// taken, as its doc says, without ReleaseFDs; one received after Close (a
// read racing it) is closed too.
func TestCloseClosesReceivedFDs(t *testing.T) {
	a, b := pair(t, 0, true)
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// open counts this process's descriptors of f's inode.
	open := func() int {
		n := 0
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			var s unix.Stat_t
			if unix.Stat("/proc/self/fd/"+e.Name(), &s) == nil && s.Ino == st.Ino && s.Dev == st.Dev {
				n++
			}
		}
		return n
	}
	frame, _ := EncodeFrame(&Heartbeat{Header: Header{ID: 1}})
	for i := 0; i < 2; i++ {
		if err := a.WriteFrame(frame, f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if n := open(); n != 2 {
		t.Fatalf("%d descriptors of the file after receiving one", n)
	}
	b.Close()
	if n := open(); n != 1 {
		t.Fatalf("%d descriptors of the file after Close, want only the sender's", n)
	}
	if _, ok := b.TakeFD(); ok {
		t.Fatal("TakeFD after Close returned a descriptor")
	}
}

// TestTryWrite: TryWrite writes whole frames when the socket has room, and
// otherwise, or while another write holds the connection, writes nothing
// and says so without blocking.
func TestTryWrite(t *testing.T) {
	a, b := pair(t, 0, false)
	frame := []byte{0, 0, 0, 3, 'a', 'b', 'c'}
	if ok, err := a.TryWrite(frame); !ok || err != nil {
		t.Fatalf("TryWrite on an empty socket: %v %v", ok, err)
	}
	if body, err := b.ReadFrame(); err != nil || string(body) != "abc" {
		t.Fatalf("read %q %v", body, err)
	}
	if ok, _ := a.TryWrite(make([]byte, MaxTryWrite+1)); ok {
		t.Fatal("TryWrite took more than MaxTryWrite")
	}
	a.wmu.Lock()
	ok, err := a.TryWrite(frame)
	a.wmu.Unlock()
	if ok || err != nil {
		t.Fatalf("TryWrite while another write holds the connection: %v %v", ok, err)
	}
	// Fill the socket: nobody reads b.
	big := make([]byte, MaxTryWrite)
	binary.BigEndian.PutUint32(big, MaxTryWrite-HeaderLen)
	full := false
	for i := 0; i < 10000 && !full; i++ {
		ok, err := a.TryWrite(big)
		if err != nil {
			t.Fatal(err)
		}
		full = !ok
	}
	if !full {
		t.Fatal("TryWrite never found the socket full")
	}
	// Every frame written is whole: read them all back.
	a.Close()
	for {
		body, err := b.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after the full socket: %v", err)
			}
			break
		}
		if len(body) != MaxTryWrite-HeaderLen {
			t.Fatalf("a frame of %d bytes", len(body))
		}
	}
}
