package bridge

import "github.com/prometheus/client_golang/prometheus/testutil"

// Counts are some of a bridge's metrics, for tests.
type Counts struct {
	Published, Applied, Conflicts, TooLarge, ApplyErrors, Split float64
	Merged, Paused                                              float64
}

func CountsOf(b *Bridge) Counts {
	return Counts{
		Published:   testutil.ToFloat64(b.stats.published),
		Applied:     testutil.ToFloat64(b.stats.applied),
		Conflicts:   testutil.ToFloat64(b.stats.conflicts),
		TooLarge:    testutil.ToFloat64(b.stats.refused.WithLabelValues("too_large")),
		ApplyErrors: testutil.ToFloat64(b.stats.applyErrs),
		Split:       testutil.ToFloat64(b.stats.split),
		Merged:      testutil.ToFloat64(b.stats.outboxFull.WithLabelValues("merged")),
		Paused:      testutil.ToFloat64(b.stats.outboxFull.WithLabelValues("paused")),
	}
}

// DecodeValues returns the values a stream message sets.
func DecodeValues(data []byte) (origin string, vals map[string]string, err error) {
	bt, err := decodeBatch(data)
	if err != nil {
		return "", nil, err
	}
	vals = map[string]string{}
	for _, v := range bt.Set {
		vals[v.Name] = string(v.Data)
	}
	return bt.Origin, vals, nil
}
