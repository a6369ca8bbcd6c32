package consensus

import (
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	h := NewHistogram(time.Millisecond, 10*time.Millisecond)
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 4 || s.Cumulative[0] != 2 || s.Cumulative[1] != 3 {
		t.Fatalf("snapshot %+v: want ≤1ms: 2, ≤10ms: 3, count 4", s)
	}
	if want := 500*time.Microsecond + time.Millisecond + 5*time.Millisecond + time.Second; s.Sum != want {
		t.Fatalf("sum %v, want %v", s.Sum, want)
	}
}
