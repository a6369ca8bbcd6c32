package fsm

import (
	"testing"

	"github.com/lockd/lockd/api"
)

// The history reclaims its discarded front in place: under a steady write
// load its backing array stops growing, and the live events stay in order.
func TestHistoryReclaimsInPlace(t *testing.T) {
	h := &history{maxEvents: 2000, maxBytes: 1 << 40}
	add := func(rev int64) { h.add([]api.Event{{Revision: rev, KV: api.KeyValue{Key: "k"}}}) }
	var rev int64
	for ; rev < 10000; rev++ {
		add(rev + 1)
	}
	evs := make([]api.Event, 1)
	allocs := testing.AllocsPerRun(10, func() {
		for range 4000 { // at least one reclaim per run
			rev++
			evs[0] = api.Event{Revision: rev, KV: api.KeyValue{Key: "k"}}
			h.add(evs)
		}
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations per 4,000 events under a steady load, want 0", allocs)
	}
	live := h.live()
	if len(live) != 2000 || live[0].Revision != rev-1999 || live[len(live)-1].Revision != rev || h.compacted != rev-2000 {
		t.Fatalf("live %d events %d..%d, compacted %d; want 2000 events %d..%d, compacted %d",
			len(live), live[0].Revision, live[len(live)-1].Revision, h.compacted, rev-1999, rev, rev-2000)
	}
	for i := 1; i < len(live); i++ {
		if live[i].Revision != live[i-1].Revision+1 {
			t.Fatalf("events out of order at %d: %d after %d", i, live[i].Revision, live[i-1].Revision)
		}
	}
}
