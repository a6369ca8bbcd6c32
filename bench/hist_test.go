package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueInOrder(t *testing.T) {
	// Every value lands in a bucket whose upper edge is at least the value
	// and within 1/64 of it, and buckets increase with the value.
	vals := []uint64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1, 1 << 63, ^uint64(0)}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		vals = append(vals, r.Uint64()>>r.IntN(64))
	}
	slices.Sort(vals)
	prev := -1
	for _, v := range vals {
		b := bucketOf(v)
		if b < prev || b >= numBuckets {
			t.Fatalf("value %d: bucket %d (previous %d, buckets %d)", v, b, prev, numBuckets)
		}
		prev = b
		hi := bucketHigh(b)
		if hi < v {
			t.Fatalf("value %d in bucket %d whose upper edge is %d", v, b, hi)
		}
		if v >= subCount && float64(hi-v) > float64(v)/subCount {
			t.Fatalf("value %d reported as %d: more than 1/%d off", v, hi, subCount)
		}
		if b > 0 && bucketHigh(b-1) >= v {
			t.Fatalf("value %d also fits bucket %d (upper edge %d)", v, b-1, bucketHigh(b-1))
		}
	}
}

func TestQuantilesMatchSortedSamples(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var h, a, b Histogram
	var all []time.Duration
	for i := range 50000 {
		// A long-tailed mix: most samples near 1 ms, some near 50 ms.
		d := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		if i%100 == 0 {
			d = 50*time.Millisecond + time.Duration(r.IntN(int(time.Millisecond)))
		}
		all = append(all, d)
		h.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	slices.Sort(all)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := int(float64(len(all))*q+0.999999) - 1
		rank = max(0, min(rank, len(all)-1))
		want := all[rank]
		for name, hh := range map[string]*Histogram{"single": &h, "merged": &a} {
			got := hh.Quantile(q)
			if got < want || float64(got-want) > float64(want)/subCount+1 {
				t.Errorf("%s q=%v: got %v, exact %v", name, q, got, want)
			}
		}
	}
	if h.Count() != 50000 || a.Count() != 50000 {
		t.Fatalf("counts %d %d", h.Count(), a.Count())
	}
	s := h.Summary()
	if s.Max != ms(all[len(all)-1]) || s.P50 > s.P90 || s.P90 > s.P99 || s.P99 > s.P999 || s.P999 > s.Max {
		t.Fatalf("summary out of order: %+v", s)
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Summary() != (Latency{}) {
		t.Fatalf("empty histogram: %v %+v", h.Quantile(0.99), h.Summary())
	}
	h.Record(-5)
	if h.Quantile(1) != 0 || h.Count() != 1 {
		t.Fatalf("negative sample: %v", h.Quantile(1))
	}
}
