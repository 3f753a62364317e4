package ipc

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// fastKinds makes an empty message of each type with a fast path.
var fastKinds = []func() Message{
	func() Message { return new(ReadVariable) },
	func() Message { return new(VariableData) },
	func() Message { return new(WriteVariable) },
	func() Message { return new(VariableWritten) },
	func() Message { return new(ReportVariableChanges) },
	func() Message { return new(VariableChangesAcknowledged) },
	func() Message { return new(VariablesUpdated) },
}

// randomFill sets every field of m that has a fast path to a random value:
// nil or empty slices, texts and byte strings whose lengths need each form of
// CBOR head, numbers of every width.
func randomFill(r *rand.Rand, m Message) {
	var buf [maxFields]field
	for _, f := range fieldsOf(m, &buf) {
		switch p := f.p.(type) {
		case *uint64:
			*p = randomUint(r)
		case *string:
			*p = randomText(r, 1<<20)
		case *[]byte:
			*p = randomBytes(r, 1<<20)
		case *[]string:
			*p = nil
			for range randomLen(r) {
				*p = append(*p, randomText(r, 256))
			}
			if *p == nil && r.IntN(2) == 0 {
				*p = []string{}
			}
		case *[]uint64:
			*p = nil
			for range randomLen(r) {
				*p = append(*p, randomUint(r))
			}
		case *[]NamedValue:
			*p = nil
			for range randomLen(r) {
				*p = append(*p, NamedValue{Name: randomText(r, 24), Value: randomBytes(r, 256)})
			}
		default:
			panic("a field of no known kind")
		}
	}
}

func randomUint(r *rand.Rand) uint64 {
	return r.Uint64() >> r.IntN(64)
}

func randomLen(r *rand.Rand) int {
	return []int{0, 1, 3, 23, 24, 0, 1, 300}[r.IntN(8)] // across each head's bounds
}

// randomText is a text of at most max bytes.
func randomText(r *rand.Rand, max int) string {
	n := min(max, []int{0, 1, 23, 24, 255, 256, 0, 1, 2, 70000}[r.IntN(10)])
	return strings.Repeat("é", n/2) + strings.Repeat("a", n%2)
}

// randomBytes is nil, empty or of up to max bytes.
func randomBytes(r *rand.Rand, max int) []byte {
	switch r.IntN(3) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, min(max, []int{1, 24, 256, 1, 65536}[r.IntN(5)]))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestFastEncode checks that each message with a fast path is encoded to
// the very bytes fxamacker/cbor makes of it, and that the fast decoder
// takes them back and makes of them what fxamacker/cbor makes.
func TestFastEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, mk := range fastKinds {
		for range 200 {
			m := mk()
			randomFill(r, m)
			m.Hdr().Type = m.Kind()
			want, err := encMode.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := fastEncode(nil, m)
			if !ok {
				t.Fatalf("%s: no fast encoding of %+v", m.Kind(), m)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: encoded\n%x\nfxamacker/cbor:\n%x", m.Kind(), got, want)
			}
			fast, slow := mk(), mk()
			if !fastDecode(got, fast) {
				t.Fatalf("%s: the fast decoder refuses its own encoding %x", m.Kind(), got)
			}
			if err := decMode.Unmarshal(got, slow); err != nil {
				t.Fatal(err)
			}
			clear(got) // what was decoded must not share the body's memory
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%s: decoded %+v, fxamacker/cbor %+v", m.Kind(), fast, slow)
			}
		}
	}
}

// TestFastEncodeRefuses: a text that is not UTF-8 is left to
// fxamacker/cbor, and the buffer is as it was.
func TestFastEncodeRefuses(t *testing.T) {
	for _, m := range []Message{
		&ReadVariable{ServiceID: "a\xff"},
		&ReportVariableChanges{ChangedVariables: []string{"ok", "\xc3"}},
		&ReportVariableChanges{NewValues: []NamedValue{{Name: "\x80"}}},
		&Hello{},
	} {
		if got, ok := fastEncode([]byte("kept"), m); ok || string(got) != "kept" {
			t.Errorf("%T %+v: fast encoding %q, %v", m, m, got, ok)
		}
	}
}

// fastSeeds are bodies the fast decoder must leave to fxamacker/cbor, each
// next to one it takes.
var fastSeeds = [][]byte{
	// {"type": "ReadVariable", "id": 1, "service_id": "s", "variable_name": "v"}
	[]byte("\xa4\x64type\x6cReadVariable\x62id\x01\x6aservice_id\x61s\x6dvariable_name\x61v"),
	// the same with "id" twice
	[]byte("\xa4\x64type\x6cReadVariable\x62id\x01\x62id\x02\x6dvariable_name\x61v"),
	// a key fxamacker/cbor matches without regard to case
	[]byte("\xa2\x64type\x6cReadVariable\x6aSERVICE_ID\x61s"),
	// a key no field has
	[]byte("\xa2\x64type\x6cReadVariable\x65extra\x61s"),
	// a value that is not UTF-8
	[]byte("\xa2\x64type\x6cReadVariable\x6aservice_id\x61\xff"),
	// something after the map
	[]byte("\xa1\x64type\x6cReadVariable\x00"),
	// an indefinite-length map
	[]byte("\xbf\x64type\x6cReadVariable\xff"),
	// null for a string
	[]byte("\xa2\x64type\x6cReadVariable\x6aservice_id\xf6"),
	// text where bytes are due
	[]byte("\xa2\x64type\x6dWriteVariable\x64data\x61x"),
	// an array longer than what follows
	[]byte("\xa2\x64type\x70VariablesUpdated\x69variables\x9a\x00\x01\x00\x00"),
	// a negative version
	[]byte("\xa2\x64type\x70VariablesUpdated\x68versions\x81\x20"),
	// a pair of three
	[]byte("\xa2\x64type\x75ReportVariableChanges\x6anew_values\x81\x83\x61v\x41x\x00"),
	// a pair cut short
	[]byte("\xa2\x64type\x75ReportVariableChanges\x6anew_values\x81"),
	// two pairs due, one there
	[]byte("\xa2\x64type\x75ReportVariableChanges\x6anew_values\x82\x82\x60\x40"),
}

// TestFastDecodeLeaves: bodies outside what the encoder makes go to
// fxamacker/cbor.
func TestFastDecodeLeaves(t *testing.T) {
	for i, b := range fastSeeds {
		if i == 0 {
			if !fastDecode(b, new(ReadVariable)) {
				t.Errorf("the fast decoder left %x", b)
			}
			continue
		}
		took := 0
		for _, mk := range fastKinds {
			if fastDecode(b, mk()) {
				took++
			}
		}
		if took != 0 {
			t.Errorf("seed %d: the fast decoder took %x", i, b)
		}
	}
}

// FuzzFastDecode checks the fast decoder against fxamacker/cbor on any
// body, into new messages and into messages that already hold values (as
// DecodeInto reuses them): whatever it takes, fxamacker/cbor takes too and
// makes the same of, and what it leaves it leaves untouched.
func FuzzFastDecode(f *testing.F) {
	seedFrames(f)
	for _, m := range []Message{
		&VariableData{Header: Header{ID: 9}, ServiceID: "a_b", VariableName: "v", Data: []byte{}, Version: 1 << 40},
		&VariableWritten{Header: Header{ID: 300}, ServiceID: "a_b", VariableName: "v", Version: 7},
		&VariableChangesAcknowledged{ServiceID: "a_b", ChangedVariables: []string{"v", "w"}},
		&VariablesUpdated{ServiceID: "a_b", Variables: []string{"v"}, Versions: []uint64{70000}},
	} {
		fr, err := EncodeFrame(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr)
	}
	for _, b := range fastSeeds {
		f.Add(append([]byte{0, 0, 0, 0}, b...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > HeaderLen {
			data = data[HeaderLen:]
		}
		for _, mk := range fastKinds {
			for _, prefill := range []bool{false, true} {
				fast, slow, before := mk(), mk(), mk()
				if prefill {
					for _, m := range []Message{fast, slow, before} {
						randomFill(rand.New(rand.NewPCG(uint64(len(data)), 5)), m)
					}
				}
				if !fastDecode(data, fast) {
					if !reflect.DeepEqual(fast, before) {
						t.Fatalf("%s: left %x, but changed the message", fast.Kind(), data)
					}
					continue
				}
				if err := decMode.Unmarshal(data, slow); err != nil {
					t.Fatalf("%s: took %x, which fxamacker/cbor refuses: %v", fast.Kind(), data, err)
				}
				if !reflect.DeepEqual(fast, slow) {
					t.Fatalf("%s: %x decoded to\n%+v\nfxamacker/cbor:\n%+v", fast.Kind(), data, fast, slow)
				}
			}
		}
	})
}
