package bridge_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/commy/commy/internal/bridge"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkFederation measures, in one run on one 3-node cluster (R3, file
// storage), the time from a write on host A to the new value in a mapped
// reader on host B, against the floor: a JetStream KV put on one connection
// to a KV watcher on another. Each op does one of each, alternately, so
// both see the same load; p50 and p99 of each and the ratio of the p50s
// are reported. Host A's bridge and the put use node 1, host B's bridge
// and the watcher node 2, so both paths cross the same nodes.
func BenchmarkFederation(b *testing.B) {
	c := newCluster(b, 0)
	ctx := context.Background()
	urls := c.urls()

	// The floor.
	_, js := c.connectTo(urls[0])
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "floor", Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	_, js2 := c.connectTo(urls[1])
	kv2, err := js2.KeyValue(ctx, "floor")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := kv.Put(ctx, "x", []byte("0")); err != nil {
		b.Fatal(err)
	}
	w, err := kv2.Watch(ctx, "x", jetstream.UpdatesOnly())
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()

	// Two bridged hosts.
	ha := newHost(b, "a", c, false, func(cfg *bridge.Config) { cfg.NATS.URLs = urls[:1] })
	hb := newHost(b, "b", c, false, func(cfg *bridge.Config) { cfg.NATS.URLs = urls[1:2] })
	<-ha.br.Ready()
	<-hb.br.Ready()
	sa := ha.service("fed", "bench")
	ha.set(sa, "x", "0")
	waitValue(b, []*host{hb}, "fed", "bench", "x", "0")
	m, err := hb.service("fed", "bench").Map(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if !m.Local() {
		b.Fatal("the reader on b is not mapped")
	}

	buf := make([]byte, 0, 64)
	floor := make([]time.Duration, 0, b.N)
	fed := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		want := fmt.Sprint(i + 1)

		t0 := time.Now()
		if _, err := kv.Put(ctx, "x", []byte(want)); err != nil {
			b.Fatal(err)
		}
		for e := range w.Updates() {
			if e != nil && string(e.Value()) == want {
				break
			}
		}
		floor = append(floor, time.Since(t0))

		seq := m.ChangeSeq()
		t0 = time.Now()
		if _, err := sa.Write(ctx, "x", []byte(want)); err != nil {
			b.Fatal(err)
		}
		for {
			if buf, _, err = m.Read("x", buf); err != nil {
				b.Fatal(err)
			}
			if string(buf) == want {
				break
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			seq, err = m.Wait(wctx, seq)
			cancel()
			if err != nil {
				b.Fatalf("op %d: %v", i, err)
			}
		}
		fed = append(fed, time.Since(t0))
	}
	b.StopTimer()
	fp50, fp99 := percentiles(floor)
	bp50, bp99 := percentiles(fed)
	b.ReportMetric(float64(fp50.Microseconds()), "floor-p50-µs")
	b.ReportMetric(float64(fp99.Microseconds()), "floor-p99-µs")
	b.ReportMetric(float64(bp50.Microseconds()), "bridge-p50-µs")
	b.ReportMetric(float64(bp99.Microseconds()), "bridge-p99-µs")
	b.ReportMetric(float64(bp50)/float64(fp50), "p50-ratio")
}

func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}
