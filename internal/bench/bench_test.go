package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 1000; i++ {
		s = append(s, time.Duration(i))
	}
	for _, tc := range []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{s, 50, 500},
		{s, 99, 990},
		{s, 99.9, 999},
		{s, 100, 1000},
		{s, 0, 1},
		{s[:1], 99.9, 1},
		{s[:10], 99, 10},
		{nil, 50, 0},
	} {
		if got := Percentile(tc.samples, tc.p); got != tc.want {
			t.Errorf("Percentile(%d samples, %v) = %d, want %d", len(tc.samples), tc.p, got, tc.want)
		}
	}
}

// named is a System under another name, so that one broker can stand for
// two systems.
type named struct {
	*Commy
	name string
}

func (n named) Name() string { return n.name }

// starts records the measurements Run starts, in order.
type starts struct{ descs []string }

func (s *starts) Start(desc string, _ int64) {
	s.descs = append(s.descs, strings.Join(strings.Fields(desc), " "))
}
func (s *starts) Set(int64) {}
func (s *starts) Finish()   {}

// TestRunAlternates checks that Run measures two systems slice by slice in
// turn, shares the requests and rounds out over the slices, and adds every
// slice to the result.
func TestRunAlternates(t *testing.T) {
	sock := serve(t)
	ctx := context.Background()
	cl := dial(t, sock)
	a, err := NewCommy(ctx, cl, sock, "alt", "bench", 64)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var p starts
	cfg := Config{Scenarios: []string{ScenarioRead, ScenarioMappedRead, ScenarioFanout}, Clients: []int{2},
		Requests: 11, Rounds: 7, Subscribers: 3, Warmup: 4, Alternate: 3, Progress: &p}
	rs, err := Run(ctx, cfg, a, named{a, "other"})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range []string{"read, 2 clients", "mapped-read, 2 clients", "fanout, 3 subscribers"} {
		for k := 1; k <= 3; k++ {
			for _, sys := range []string{"commy", "other"} {
				want = append(want, fmt.Sprintf("%s %s (%d/3)", sys, m, k))
			}
		}
	}
	if !slices.Equal(p.descs, want) {
		t.Errorf("measured in the order\n%q\nwant\n%q", p.descs, want)
	}
	if len(rs) != 6 {
		t.Fatalf("%d results, want 6: %+v", len(rs), rs)
	}
	for _, r := range rs {
		ops := int64(11)
		if r.Scenario == ScenarioFanout {
			ops = 7
		}
		if r.Ops != ops || int64(len(r.Latencies)) != ops/int64(r.Pipeline) || r.OpsPerSec <= 0 ||
			!slices.IsSorted(r.Latencies) || r.MaxMicros != micros(r.Latencies[len(r.Latencies)-1]) {
			t.Errorf("%s %s: %d ops, %d samples, %+v", r.System, r.Label(), r.Ops, len(r.Latencies), r)
		}
	}

	// One system: one measurement each, whatever Alternate says.
	p.descs = nil
	cfg.Scenarios = []string{ScenarioRead}
	if _, err := Run(ctx, cfg, a); err != nil {
		t.Fatal(err)
	}
	if want := []string{"commy read, 2 clients"}; !slices.Equal(p.descs, want) {
		t.Errorf("one system measured as %q, want %q", p.descs, want)
	}
}

func TestConfigSlice(t *testing.T) {
	c := Config{Requests: 10, Rounds: 2, Duration: 9 * time.Second, Warmup: 2}
	var req, rounds []int
	for k := range 4 {
		s := c.slice(k, 4)
		req, rounds = append(req, s.Requests), append(rounds, s.Rounds)
		if s.Duration != 2250*time.Millisecond || s.Warmup != 1 {
			t.Errorf("slice %d: %+v", k, s)
		}
	}
	if !slices.Equal(req, []int{3, 3, 2, 2}) || !slices.Equal(rounds, []int{1, 1, 0, 0}) {
		t.Errorf("requests %v, rounds %v", req, rounds)
	}
}
