package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Decoder limits. A frame is one message, so a well-formed one nests at most
// four deep (map, array, pair, bytes).
const (
	MaxNesting  = 8
	MaxArray    = 65536
	MaxMapPairs = 1024
)

var (
	encMode cbor.UserBufferEncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{NilContainers: cbor.NilContainerAsEmpty}.UserBufferEncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:  MaxNesting,
		MaxArrayElements: MaxArray,
		MaxMapPairs:      MaxMapPairs,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Decode parses the body of a frame into a message of the type it names. A
// body that is not one well-formed CBOR map within the limits, or whose fields
// have the wrong types, gives an error matching ErrInvalidRequest; a type
// nobody knows gives ErrUnknownMessage. The header is returned whenever it
// could be read, so the reply can carry the request's id.
func Decode(body []byte) (Message, Header, error) {
	typ, h, err := typeOf(body)
	if err != nil {
		return nil, h, err
	}
	mk, known := kinds[string(typ)]
	if !known {
		return nil, headerOf(body), fmt.Errorf("%w: %q", ErrUnknownMessage, typ)
	}
	m := mk()
	if fastDecode(body, m) {
		return m, *m.Hdr(), nil
	}
	if err := decMode.Unmarshal(body, m); err != nil {
		return nil, headerOf(body), fmt.Errorf("%w: %s: %w", ErrInvalidRequest, typ, err)
	}
	return m, *m.Hdr(), nil
}

// DecodeInto parses body into m, which must be of the type the body names
// (else an error matching ErrInvalidRequest). It is Decode for a reader that
// expects one type and reuses one message for it: slices keep their memory
// from one call to the next, and a field the body leaves out keeps its old
// value.
func DecodeInto(body []byte, m Message) error {
	typ, _, err := typeOf(body)
	if err != nil {
		return err
	}
	if string(typ) != m.Kind() {
		return fmt.Errorf("%w: %q where %s was due", ErrInvalidRequest, typ, m.Kind())
	}
	if fastDecode(body, m) {
		return nil
	}
	if err := decMode.Unmarshal(body, m); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidRequest, typ, err)
	}
	return nil
}

// typeOf is the type a body names: read in place when the body starts as
// this package encodes one (peekType), else decoded with the header, which
// is then returned too. The error matches ErrInvalidRequest.
func typeOf(body []byte) ([]byte, Header, error) {
	if typ, ok := peekType(body); ok {
		return typ, Header{}, nil
	}
	var h Header
	if err := decMode.Unmarshal(body, &h); err != nil {
		return nil, h, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if h.Type == "" {
		return nil, h, fmt.Errorf("%w: no type", ErrInvalidRequest)
	}
	return []byte(h.Type), h, nil
}

// headerOf is as much of the header as body yields, for the id of an error
// reply.
func headerOf(body []byte) Header {
	var h Header
	decMode.Unmarshal(body, &h)
	return h
}

// peekType reads the type of a body that starts as this package encodes one,
// a map whose first key is "type" with a short text value, so that Decode
// unmarshals the body once. Other bodies are left to the decoder (ok false).
// Both ways the whole body is then checked by Unmarshal.
func peekType(body []byte) (typ []byte, ok bool) {
	const key = "\x64type" // text of length 4, "type"
	if len(body) < 1+len(key)+1 || body[0] < 0xa1 || body[0] > 0xb7 || string(body[1:1+len(key)]) != key {
		return nil, false
	}
	v := body[1+len(key):]
	n := int(v[0]) - 0x60
	if n < 1 || n > 23 || len(v) < 1+n {
		return nil, false
	}
	return v[1 : 1+n], true
}

// Encoder builds frames in a buffer it reuses. It is not safe for concurrent
// use.
type Encoder struct{ buf bytes.Buffer }

// Frame encodes m as a complete frame, first setting m's Type from its Kind.
// The result is valid until the next call.
func (e *Encoder) Frame(m Message) ([]byte, error) {
	e.buf.Reset()
	return appendFrame(&e.buf, m)
}

// EncodeFrame encodes m as a complete frame in new memory, for a frame that is
// shared (a notice written to many subscribers).
func EncodeFrame(m Message) ([]byte, error) {
	var b bytes.Buffer
	return appendFrame(&b, m)
}

func appendFrame(b *bytes.Buffer, m Message) ([]byte, error) {
	m.Hdr().Type = m.Kind()
	b.Write([]byte{0, 0, 0, 0})
	if p, ok := fastEncode(b.AvailableBuffer(), m); ok {
		b.Write(p)
	} else if err := encMode.MarshalToBuffer(m, b); err != nil {
		return nil, fmt.Errorf("ipc: encode %s: %w", m.Kind(), err)
	}
	out := b.Bytes()
	n := len(out) - HeaderLen
	if uint64(n) > 0xFFFFFFFF {
		return nil, fmt.Errorf("ipc: encode %s: %w", m.Kind(), ErrFrameTooLarge)
	}
	binary.BigEndian.PutUint32(out, uint32(n))
	return out, nil
}

// errWrongReply: a reply of another type than the request expects.
var errWrongReply = errors.New("ipc: unexpected reply type")

// As decodes a reply into the wanted type, turning an Error reply into the
// matching Go error.
func As[T Message](m Message) (T, error) {
	var zero T
	if e, ok := m.(*Error); ok {
		return zero, &RemoteError{Code: e.ErrorCode, Message: e.Message}
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%w: %s", errWrongReply, m.Kind())
	}
	return t, nil
}
