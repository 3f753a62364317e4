package ipc

import (
	"testing"
)

func seedFrames(f *testing.F) {
	for _, m := range []Message{
		&Hello{Header: Header{ID: 1}, Protocol: 1, ClientName: "c"},
		&ReadVariable{Header: Header{ID: 2}, ServiceID: "a_b", VariableName: "v"},
		&WriteVariable{Header: Header{ID: 3}, ServiceID: "a_b", VariableName: "v", Data: []byte("xyz")},
		&ReportVariableChanges{Header: Header{ID: 4}, ServiceID: "a_b", ChangedVariables: []string{"v"}, NewValues: []NamedValue{{Name: "v", Value: []byte("1")}}},
		&Subscribe{Header: Header{ID: 5}, ServiceID: "a_b", Variables: []string{"v"}},
		&Stats{Header: Header{ID: 6}, Requests: map[string]uint64{"Hello": 1}},
		&Error{Header: Header{ID: 7}, ErrorCode: "NO_SPACE", Message: "m"},
	} {
		fr, err := EncodeFrame(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr)
	}
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{0, 0, 0, 1, 0xA0})
	f.Add([]byte{0, 0, 0, 3, 0x81, 0x81, 0x80})
}

// FuzzReadFrame feeds arbitrary bytes through a real socket to the frame
// reader and decoder: they must fail cleanly, never panic, and never hand out
// a frame longer than the limit.
func FuzzReadFrame(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := pair(t, 1<<12, false)
		go func() {
			a.WriteFrame(data, nil)
			a.Close()
		}()
		for {
			body, err := b.ReadFrame()
			if err != nil {
				return
			}
			if len(body) == 0 || len(body) > 1<<12 {
				t.Fatalf("frame of %d bytes", len(body))
			}
			Decode(body)
		}
	})
}

// FuzzDecode checks the message decoder on arbitrary bodies: an error or a
// message whose re-encoding decodes to the same type.
func FuzzDecode(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > HeaderLen {
			data = data[HeaderLen:]
		}
		m, h, err := Decode(data)
		if err != nil {
			return
		}
		if m.Kind() != h.Type {
			t.Fatalf("decoded %s for type %q", m.Kind(), h.Type)
		}
		if full := headerOf(data); full != h {
			t.Fatalf("header %+v, decoded alone %+v", h, full)
		}
		fr, err := EncodeFrame(m)
		if err != nil {
			return // e.g. NaN floats in Stats encode fine; anything else is reported here
		}
		m2, _, err := Decode(fr[HeaderLen:])
		if err != nil || m2.Kind() != m.Kind() {
			t.Fatalf("re-encoded %s does not decode: %v", m.Kind(), err)
		}
	})
}
