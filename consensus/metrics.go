package consensus

import (
	"sync/atomic"
	"time"
)

// Histogram counts durations into fixed buckets; safe for concurrent use
// and lock-free, so the Raft loop can observe without waiting.
type Histogram struct {
	bounds []time.Duration // upper bounds, ascending
	counts []atomic.Uint64 // len(bounds)+1; the last is +Inf
	sum    atomic.Int64    // nanoseconds
}

// NewHistogram returns a histogram with the given upper bounds.
func NewHistogram(bounds ...time.Duration) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// latencyBounds suit fsync and apply times: 50 µs to 2.5 s.
func latencyBounds() []time.Duration {
	return []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
		50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond}
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// HistogramSnapshot is a histogram read at one moment. Cumulative[i]
// counts observations ≤ Bounds[i]; Count counts all.
type HistogramSnapshot struct {
	Bounds     []time.Duration
	Cumulative []uint64
	Count      uint64
	Sum        time.Duration
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Bounds: h.bounds, Cumulative: make([]uint64, len(h.bounds)), Sum: time.Duration(h.sum.Load())}
	var acc uint64
	for i := range h.counts {
		acc += h.counts[i].Load()
		if i < len(h.bounds) {
			s.Cumulative[i] = acc
		}
	}
	s.Count = acc
	return s
}

// NodeMetrics are a Node's counters for /metrics.
type NodeMetrics struct {
	// Proposals counts commands proposed by this node as leader;
	// ProposalsFailed those refused or lost.
	Proposals, ProposalsFailed atomic.Uint64
	// Persist times each durable write of a Ready (the fsync); Apply times
	// each committed entry's apply.
	Persist, Apply *Histogram
	// Snapshots counts snapshots taken here, SnapshotsFailed those that
	// failed; SnapshotsSent and SnapshotSendsFailed transfers to
	// followers; SnapshotsInstalled snapshots received and installed.
	Snapshots, SnapshotsFailed, SnapshotsSent, SnapshotSendsFailed, SnapshotsInstalled atomic.Uint64
}

func newNodeMetrics() *NodeMetrics {
	return &NodeMetrics{Persist: NewHistogram(latencyBounds()...), Apply: NewHistogram(latencyBounds()...)}
}
