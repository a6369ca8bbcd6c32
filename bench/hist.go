package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a recorded value is reported within 1/64 (1.6 %) of itself.
const subBits = 6

const (
	subCount   = 1 << subBits
	numBuckets = (65 - subBits) * subCount
)

// Histogram records durations in log-linear buckets: fixed memory
// (about 30 KiB) whatever the number of samples, so a benchmark can run
// for hours without keeping every latency. Not safe for concurrent use;
// each worker keeps its own and they are merged at the end.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	sum      float64
	min, max time.Duration
}

func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1
	return (e+1)<<subBits + int(v>>uint(e)-subCount)
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	e := uint(i>>subBits - 1)
	m := uint64(i&(subCount-1) + subCount)
	return (m+1)<<e - 1
}

// Record adds one duration (negative counts as zero).
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += float64(d)
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Quantile returns the q-quantile (0 ≤ q ≤ 1): the upper edge of the bucket
// holding the sample of that rank, never above the largest sample. Zero
// for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = math.Max(0, math.Min(1, q))
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := time.Duration(bucketHigh(i))
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// Latency is a histogram summarized in milliseconds, as printed and as
// serialized by lockctl bench --output json.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// Summary summarizes h.
func (h *Histogram) Summary() Latency {
	l := Latency{Count: h.n}
	if h.n == 0 {
		return l
	}
	l.Mean = h.sum / float64(h.n) / 1e6
	l.P50 = ms(h.Quantile(0.50))
	l.P90 = ms(h.Quantile(0.90))
	l.P99 = ms(h.Quantile(0.99))
	l.P999 = ms(h.Quantile(0.999))
	l.Max = ms(h.max)
	return l
}
