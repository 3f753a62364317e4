package ipc

import "testing"

// BenchmarkDecode is the cost of turning a request body into a message.
func BenchmarkDecode(b *testing.B) {
	f, _ := EncodeFrame(&ReadVariable{Header: Header{ID: 7}, ServiceID: "acme_orders", VariableName: "count"})
	body := f[HeaderLen:]
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode is the cost of a reply frame in a reused buffer.
func BenchmarkEncode(b *testing.B) {
	var enc Encoder
	m := &VariableData{Header: Header{ID: 7}, ServiceID: "acme_orders", VariableName: "count", Data: make([]byte, 64), Version: 9}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := enc.Frame(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeReply is a client's cost of a VariableData reply.
func BenchmarkDecodeReply(b *testing.B) {
	f, _ := EncodeFrame(&VariableData{Header: Header{ID: 7}, ServiceID: "acme_orders", VariableName: "count", Data: make([]byte, 64), Version: 9})
	body := f[HeaderLen:]
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeNotice is a subscriber's cost of a VariablesUpdated
// notice, decoded into the message it reuses.
func BenchmarkDecodeNotice(b *testing.B) {
	f, _ := EncodeFrame(&VariablesUpdated{ServiceID: "acme_orders", Variables: []string{"count", "limit"}, Versions: []uint64{9, 1000}})
	body := f[HeaderLen:]
	var m VariablesUpdated
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeInto(body, &m); err != nil {
			b.Fatal(err)
		}
	}
}
