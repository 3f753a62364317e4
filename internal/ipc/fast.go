package ipc

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// The messages on the hot paths (a read, a write, a batch of changes, a
// notice, and their replies) are encoded and decoded here without
// reflection. The decoder takes only what this package's encoder makes: a
// definite-length map of exactly named fields, each of its own CBOR type,
// every text valid UTF-8, no key twice, nothing after the map. Anything
// else, and every other message, goes to fxamacker/cbor, which decides
// whether it is valid and what it means; so for every body the fast path
// takes, the result is what fxamacker/cbor would have made of it
// (FuzzFastDecode checks this), and the encoder makes the same bytes it
// would (TestFastEncode).

// field is one field of a message: its key and a pointer to it, one of
// *string, *uint64, *[]byte, *[]string, *[]uint64 or *[]NamedValue.
type field struct {
	key string
	p   any
}

// maxFields is the most fields of a message with a fast path.
const maxFields = 6

// fieldsOf lists m's fields in declaration order into buf, or returns nil
// when m has no fast path.
func fieldsOf(m Message, buf *[maxFields]field) []field {
	switch m := m.(type) {
	case *ReadVariable:
		*buf = [maxFields]field{{"type", &m.Type}, {"id", &m.ID},
			{"service_id", &m.ServiceID}, {"variable_name", &m.VariableName}}
		return buf[:4]
	case *VariableData:
		*buf = [maxFields]field{{"type", &m.Type}, {"id", &m.ID},
			{"service_id", &m.ServiceID}, {"variable_name", &m.VariableName},
			{"data", &m.Data}, {"version", &m.Version}}
		return buf[:6]
	case *WriteVariable:
		*buf = [maxFields]field{{"type", &m.Type}, {"id", &m.ID},
			{"service_id", &m.ServiceID}, {"variable_name", &m.VariableName},
			{"data", &m.Data}}
		return buf[:5]
	case *VariableWritten:
		*buf = [maxFields]field{{"type", &m.Type}, {"id", &m.ID},
			{"service_id", &m.ServiceID}, {"variable_name", &m.VariableName},
			{"version", &m.Version}}
		return buf[:5]
	case *ReportVariableChanges:
		*buf = [maxFields]field{{"type", &m.Type}, {"id", &m.ID},
			{"service_id", &m.ServiceID}, {"changed_variables", &m.ChangedVariables},
			{"new_values", &m.NewValues}}
		return buf[:5]
	case *VariableChangesAcknowledged:
		*buf = [maxFields]field{{"type", &m.Type}, {"id", &m.ID},
			{"service_id", &m.ServiceID}, {"changed_variables", &m.ChangedVariables}}
		return buf[:4]
	case *VariablesUpdated:
		*buf = [maxFields]field{{"type", &m.Type}, {"id", &m.ID},
			{"service_id", &m.ServiceID}, {"variables", &m.Variables},
			{"versions", &m.Versions}}
		return buf[:5]
	}
	return nil
}

// CBOR major types.
const (
	majUint  = 0
	majBytes = 2
	majText  = 3
	majArray = 4
	majMap   = 5
)

// head reads the head of a data item of major type maj with a definite
// argument: the argument and the head's length, or ok false.
func head(b []byte, maj byte) (arg uint64, n int, ok bool) {
	if len(b) == 0 || b[0]>>5 != maj {
		return 0, 0, false
	}
	switch ai := b[0] & 0x1f; {
	case ai < 24:
		return uint64(ai), 1, true
	case ai == 24 && len(b) >= 2:
		return uint64(b[1]), 2, true
	case ai == 25 && len(b) >= 3:
		return uint64(binary.BigEndian.Uint16(b[1:])), 3, true
	case ai == 26 && len(b) >= 5:
		return uint64(binary.BigEndian.Uint32(b[1:])), 5, true
	case ai == 27 && len(b) >= 9:
		return binary.BigEndian.Uint64(b[1:]), 9, true
	}
	return 0, 0, false
}

// str reads a byte or text string: its content and the bytes it took. A
// text must be valid UTF-8 when check is set.
func str(b []byte, maj byte, check bool) ([]byte, int, bool) {
	l, n, ok := head(b, maj)
	if !ok || l > uint64(len(b)-n) {
		return nil, 0, false
	}
	s := b[n : n+int(l)]
	if check && maj == majText && !utf8.Valid(s) {
		return nil, 0, false
	}
	return s, n + int(l), true
}

// count reads an array's head: its length, which fits in what is left of b
// and in MaxArray, and the head's length.
func count(b []byte) (int, int, bool) {
	l, n, ok := head(b, majArray)
	if !ok || l > MaxArray || l > uint64(len(b)-n) {
		return 0, 0, false
	}
	return int(l), n, true
}

// value reads the value of a field whose pointer is p from the start of b,
// and stores it when set, once a call without set has checked it; it
// returns the bytes it took.
func value(b []byte, p any, set bool) (int, bool) {
	switch p := p.(type) {
	case *uint64:
		return uintAt(b, p, set)
	case *string:
		return textAt(b, p, set)
	case *[]byte:
		return bytesAt(b, p, set)
	case *[]string:
		return array(b, p, set, textAt)
	case *[]uint64:
		return array(b, p, set, uintAt)
	case *[]NamedValue:
		return array(b, p, set, namedValue)
	}
	return 0, false
}

// uintAt, textAt, bytesAt and namedValue read one value each as value does;
// p is nil when set is not.

func uintAt(b []byte, p *uint64, set bool) (int, bool) {
	v, n, ok := head(b, majUint)
	if ok && set {
		*p = v
	}
	return n, ok
}

func textAt(b []byte, p *string, set bool) (int, bool) {
	s, n, ok := str(b, majText, !set)
	if ok && set && *p != string(s) {
		*p = string(s)
	}
	return n, ok
}

func bytesAt(b []byte, p *[]byte, set bool) (int, bool) {
	s, n, ok := str(b, majBytes, false)
	if ok && set {
		*p = bytes.Clone(s)
		if *p == nil {
			*p = []byte{}
		}
	}
	return n, ok
}

// namedValue reads a [name, value] pair.
func namedValue(b []byte, p *NamedValue, set bool) (int, bool) {
	if len(b) == 0 || b[0] != 0x82 { // an array of two
		return 0, false
	}
	var name *string
	var val *[]byte
	if set {
		name, val = &p.Name, &p.Value
	}
	n, ok := textAt(b[1:], name, set)
	if !ok {
		return 0, false
	}
	m, ok := bytesAt(b[1+n:], val, set)
	if !ok {
		return 0, false
	}
	return 1 + n + m, true
}

// array reads an array whose elements elem reads.
func array[T any](b []byte, p *[]T, set bool, elem func(b []byte, e *T, set bool) (int, bool)) (int, bool) {
	l, n, ok := count(b)
	if !ok {
		return 0, false
	}
	if set {
		*p = resize(*p, l)
	}
	for i := range l {
		var e *T
		if set {
			e = &(*p)[i]
		}
		m, ok := elem(b[n:], e, set)
		if !ok {
			return 0, false
		}
		n += m
	}
	return n, true
}

// resize returns s with length l, in its own memory when it has the room
// and l > 0, as fxamacker/cbor does.
func resize[T any](s []T, l int) []T {
	if s == nil || cap(s) < l || l == 0 {
		return make([]T, l)
	}
	return s[:l]
}

// fastDecode decodes body into m when m has a fast path and body is as
// this package's encoder makes it (see above), reporting whether it did.
// It changes m only when it reports true.
func fastDecode(body []byte, m Message) bool {
	var buf [maxFields]field
	fs := fieldsOf(m, &buf)
	if fs == nil {
		return false
	}
	pairs, n, ok := head(body, majMap)
	if !ok || pairs > uint64(len(fs)) {
		return false
	}
	var at [maxFields]int // where each field's value starts, +1; 0 if absent
	for range pairs {
		k, m, ok := str(body[n:], majText, false) // checked by matching a key
		if !ok {
			return false
		}
		n += m
		j := 0
		for j < len(fs) && fs[j].key != string(k) {
			j++
		}
		if j == len(fs) || at[j] != 0 {
			return false // unknown (fxamacker/cbor's looser matching decides) or twice
		}
		at[j] = n + 1
		if m, ok = value(body[n:], fs[j].p, false); !ok {
			return false
		}
		n += m
	}
	if n != len(body) {
		return false
	}
	if h := m.Hdr(); at[0] != 0 && h.Type != m.Kind() {
		h.Type = m.Kind() // not a copy of the body's, when it is the same
	}
	for j, a := range at[:len(fs)] {
		if a != 0 {
			value(body[a-1:], fs[j].p, true)
		}
	}
	return true
}

// appendHead appends a CBOR head in its shortest form.
func appendHead(b []byte, maj byte, arg uint64) []byte {
	maj <<= 5
	switch {
	case arg < 24:
		return append(b, maj|byte(arg))
	case arg <= 0xff:
		return append(b, maj|24, byte(arg))
	case arg <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, maj|25), uint16(arg))
	case arg <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, maj|26), uint32(arg))
	}
	return binary.BigEndian.AppendUint64(append(b, maj|27), arg)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majText, uint64(len(s))), s...)
}

func appendBytes(b []byte, s []byte) []byte {
	return append(appendHead(b, majBytes, uint64(len(s))), s...)
}

// fastEncode appends m's encoding to b when m has a fast path and every
// text in it is valid UTF-8 (else fxamacker/cbor refuses it, with its
// error), reporting whether it did.
func fastEncode(b []byte, m Message) ([]byte, bool) {
	var buf [maxFields]field
	fs := fieldsOf(m, &buf)
	if fs == nil {
		return b, false
	}
	start := len(b)
	b = appendHead(b, majMap, uint64(len(fs)))
	for _, f := range fs {
		b = appendText(b, f.key)
		switch p := f.p.(type) {
		case *uint64:
			b = appendHead(b, majUint, *p)
		case *string:
			if !utf8.ValidString(*p) {
				return b[:start], false
			}
			b = appendText(b, *p)
		case *[]byte:
			b = appendBytes(b, *p)
		case *[]string:
			b = appendHead(b, majArray, uint64(len(*p)))
			for _, s := range *p {
				if !utf8.ValidString(s) {
					return b[:start], false
				}
				b = appendText(b, s)
			}
		case *[]uint64:
			b = appendHead(b, majArray, uint64(len(*p)))
			for _, v := range *p {
				b = appendHead(b, majUint, v)
			}
		case *[]NamedValue:
			b = appendHead(b, majArray, uint64(len(*p)))
			for _, nv := range *p {
				if !utf8.ValidString(nv.Name) {
					return b[:start], false
				}
				b = appendBytes(appendText(append(b, 0x82), nv.Name), nv.Value)
			}
		}
	}
	return b, true
}
