package broker

import (
	"fmt"
	"testing"
)

// BenchmarkHandled is what counting a request costs the reader goroutine:
// the counters always, the clock and the histogram with Config.Metrics.
func BenchmarkHandled(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprint("metrics=", on), func(b *testing.B) {
			br, err := New(Config{DataDir: b.TempDir(), Metrics: on})
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			s := &session{b: br}
			b.ReportAllocs()
			for b.Loop() {
				s.handled("ReadVariable", s.clock())
			}
		})
	}
}
