package broker

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// marshalRecord is what encoding/json makes of r, as a log line.
func marshalRecord(t testing.TB, r Record) []byte {
	t.Helper()
	line, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return append(line, '\n')
}

// trickyStrings are the characters encoding/json treats specially.
var trickyStrings = []string{
	"", "plain", `"quoted"`, `back\slash`, "<script>&amp;</script>", "tab\tnew\nret\rbs\bff\f",
	"\x00\x01\x1f\x7f", "caf\u00e9 \u65e5\u672c", "line\u2028para\u2029", "bad\xffutf8\xc3", "\xed\xa0\x80",
	"emoji \U0001F600", strings.Repeat("x", 300),
}

func TestAppendRecordMatchesJSON(t *testing.T) {
	uid, gid, res, zero := uint32(1000), uint32(0), int64(-7), int64(0)
	recs := []Record{
		{},
		{Time: "2026-12-02T07:00:00.123456789Z", Event: EventWrite, ClientID: 42, PID: 1234, UID: &uid, GID: &gid,
			ServiceID: "t/s", Variables: []string{"a", "b"}, Bytes: 64},
		{Event: EventDenied, PID: -1, Right: "write", Code: "PERMISSION_DENIED", Reason: "no", Variables: []string{}},
		{Event: EventFileAccess, Access: "mmap", Path: "/var/lib/commy/t/s", Result: &res, Broker: true, Comm: "cat", Exe: "/bin/cat"},
		{Event: EventAuditLost, Count: 1 << 63, Result: &zero, Bytes: -3, Request: "CreateService", Tenant: "t", Service: "s"},
	}
	for _, s := range trickyStrings {
		recs = append(recs, Record{Time: s, Event: s, Exe: s, Comm: s, Request: s, Tenant: s, Service: s, ServiceID: s,
			Variables: []string{s, s}, Right: s, Code: s, Reason: s, Access: s, Path: s})
	}
	for _, r := range recs {
		if got, want := appendRecord(nil, r, time.Time{}), marshalRecord(t, r); !bytes.Equal(got, want) {
			t.Errorf("appendRecord(%+v)\n got %s\nwant %s", r, got, want)
		}
	}
}

// TestAppendRecordRandom compares records of random bytes and runes.
func TestAppendRecordRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		var b []byte
		for range rng.IntN(12) {
			switch rng.IntN(3) {
			case 0:
				b = append(b, byte(rng.IntN(256)))
			case 1:
				b = append(b, string(rune(rng.IntN(0x2100)))...)
			default:
				b = append(b, "\u2028\u2029<>&\"\\"[rng.IntN(10)])
			}
		}
		return string(b)
	}
	for range 5000 {
		uid := rng.Uint32()
		r := Record{Time: str(), Event: str(), ClientID: rng.Uint64() >> rng.IntN(64), PID: rng.Int32() - 1<<30,
			Exe: str(), Reason: str(), Variables: []string{str()}, Bytes: rng.IntN(1 << 20)}
		if rng.IntN(2) == 0 {
			r.UID = &uid
		}
		if got, want := appendRecord(nil, r, time.Time{}), marshalRecord(t, r); !bytes.Equal(got, want) {
			t.Fatalf("appendRecord(%+v)\n got %s\nwant %s", r, got, want)
		}
	}
}

// TestAppendRecordTime: a record Log stamped gets its time formatted by the
// writer, as Log used to format it.
func TestAppendRecordTime(t *testing.T) {
	at := time.Date(2026, 12, 2, 7, 8, 9, 120000000, time.FixedZone("x", 3600))
	got := appendRecord(nil, Record{Event: EventWrite}, at)
	want := marshalRecord(t, Record{Time: at.Format(time.RFC3339Nano), Event: EventWrite})
	if !bytes.Equal(got, want) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func FuzzAppendRecord(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s, uint64(len(s)))
	}
	f.Fuzz(func(t *testing.T, s string, n uint64) {
		r := Record{Time: s, Event: s, ClientID: n, Path: s, Variables: []string{s}, Count: n >> 1}
		if got, want := appendRecord(nil, r, time.Time{}), marshalRecord(t, r); !bytes.Equal(got, want) {
			t.Fatalf("appendRecord(%+v)\n got %s\nwant %s", r, got, want)
		}
	})
}

func BenchmarkAppendRecord(b *testing.B) {
	uid, gid := uint32(1000), uint32(1000)
	at := time.Now()
	r := Record{Event: EventWrite, ClientID: 42, PID: 1234, UID: &uid, GID: &gid,
		ServiceID: "tenant/service", Variables: []string{"variable"}, Bytes: 64}
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendRecord(buf[:0], r, at)
		}
	})
	b.Run("json", func(b *testing.B) {
		r := r
		for b.Loop() {
			r.Time = at.Format(time.RFC3339Nano)
			json.Marshal(r)
		}
	})
}
