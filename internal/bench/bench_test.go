package bench

import (
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
