package fsm

import (
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// countingWriter counts bytes and throws them away.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// peakHeap samples HeapAlloc every millisecond until stop is closed.
func peakHeap(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// BenchmarkSnapshot1MKeys: an fsm holding 1,000,000 keys (100-byte
// values). Reports the time of the capture (the part that runs on the Raft
// loop between two applies), of the whole snapshot (capture + encode), its
// size, and the heap in use before and at its peak during the snapshot.
func BenchmarkSnapshot1MKeys(b *testing.B) {
	f, _ := New(DefaultConfig(time.Second))
	h := &tfsm{f: f, now: t0}
	val := make([]byte, 100)
	for i := 0; i < 1_000_000; i++ {
		data, _ := f.Codec().Encode(&Command{Kind: KindPut, Put: &Put{Key: fmt.Sprintf("key/%07d", i), Value: val}})
		h.index++
		if res := f.Apply(h.index, h.now.UnixNano(), data); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	// History is bounded by its own limits; drop nothing else.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var capture, total time.Duration
	var size int64
	var peak uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		stop := make(chan struct{})
		peakc := peakHeap(stop)
		start := time.Now()
		write := f.CaptureSnapshot()
		capture += time.Since(start)
		w := &countingWriter{}
		if err := write(w); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		close(stop)
		peak = max(peak, <-peakc)
		size = w.n
	}
	b.StopTimer()
	b.ReportMetric(float64(capture.Milliseconds())/float64(b.N), "capture-ms")
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "snapshot-ms")
	b.ReportMetric(float64(size)/(1<<20), "MiB")
	b.ReportMetric(float64(before.HeapAlloc)/(1<<20), "heap-before-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "heap-peak-MiB")
}

// TestCaptureSnapshotIsPointInTime: applies after the capture do not show
// in the snapshot written from it.
func TestCaptureSnapshotIsPointInTime(t *testing.T) {
	f, _ := New(DefaultConfig(time.Second))
	h := &tfsm{f: f, now: t0}
	put := func(k string) {
		data, _ := f.Codec().Encode(&Command{Kind: KindPut, Put: &Put{Key: k, Value: []byte("v")}})
		h.index++
		if res := f.Apply(h.index, h.now.UnixNano(), data); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	put("a")
	write := f.CaptureSnapshot()
	var applied atomic.Bool
	done := make(chan error, 1)
	pr, pw := io.Pipe()
	go func() {
		// The write runs concurrently with the next apply.
		done <- write(pw)
		pw.Close()
	}()
	put("b")
	applied.Store(true)
	g, _ := New(DefaultConfig(time.Second))
	if err := g.Restore(pr); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.Keys != 1 || !applied.Load() {
		t.Fatalf("snapshot captured before the second put holds %d keys, want 1", st.Keys)
	}
}
