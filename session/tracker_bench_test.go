package session

import (
	"math/rand"
	"testing"
	"time"
)

const benchSessions = 100_000

// benchTracker is a leader tracking 100,000 sessions with TTLs of 3–30 s
// and deadlines spread over the next 30 s.
func benchTracker(b *testing.B) (*Tracker, []ID) {
	b.Helper()
	tr, err := NewTracker(TrackerConfig{Grace: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	leases := make([]Lease, benchSessions)
	ids := make([]ID, benchSessions)
	for i := range leases {
		ttl := time.Duration(3+rng.Intn(28)) * time.Second
		leases[i] = Lease{ID: ID(i + 1), TTL: ttl, ExpiresAt: wall(time.Second + time.Duration(rng.Int63n(int64(29*time.Second))))}
		ids[i] = ID(i + 1)
	}
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	tr.Promote(at(0), leases)
	return tr, ids
}

func BenchmarkPromote100k(b *testing.B) {
	leases := make([]Lease, benchSessions)
	for i := range leases {
		leases[i] = Lease{ID: ID(i + 1), TTL: 10 * time.Second, ExpiresAt: wall(time.Duration(i) * time.Microsecond)}
	}
	tr, _ := NewTracker(TrackerConfig{Grace: time.Second})
	b.ReportAllocs()
	for b.Loop() {
		tr.Promote(at(0), leases)
	}
}

// Keepalive of a random session among 100,000, a few µs apart.
func BenchmarkKeepalive100k(b *testing.B) {
	tr, ids := benchTracker(b)
	now := at(0)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(5 * time.Microsecond)
		if _, err := tr.Keepalive(now, ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// Expired and Checkpoints at a tick when nothing is due: what every tick
// costs in the steady state.
func BenchmarkExpiredNothingDue100k(b *testing.B) {
	tr, _ := benchTracker(b)
	b.ReportAllocs()
	for b.Loop() {
		if ids := tr.Expired(at(500 * time.Millisecond)); len(ids) != 0 {
			b.Fatal(ids)
		}
	}
}

func BenchmarkCheckpointsNothingDue100k(b *testing.B) {
	tr, _ := benchTracker(b)
	b.ReportAllocs()
	for b.Loop() {
		if cps := tr.Checkpoints(at(500 * time.Millisecond)); len(cps) != 0 {
			b.Fatal(cps)
		}
	}
}

// Expired handing out full batches of 1,000 after a failover where every
// one of 100,000 sessions is due, plus the Remove of each when its expire
// entry applies. Reported per call and per session.
func BenchmarkExpiredBatch100k(b *testing.B) {
	leases := make([]Lease, benchSessions)
	for i := range leases {
		leases[i] = Lease{ID: ID(i + 1), TTL: 10 * time.Second, ExpiresAt: wall(-time.Duration(i) * time.Microsecond)}
	}
	tr, _ := NewTracker(TrackerConfig{Grace: time.Second})
	now := at(2 * time.Second)
	calls := 0
	b.ReportAllocs()
	for b.Loop() {
		if tr.Len() == 0 {
			b.StopTimer()
			tr.Promote(at(0), leases)
			tr.Observe(at(500 * time.Millisecond))
			tr.Observe(at(time.Second))
			tr.Observe(at(1500 * time.Millisecond))
			tr.Observe(now)
			b.StartTimer()
		}
		ids := tr.Expired(now)
		if len(ids) != 1000 {
			b.Fatalf("Expired returned %d", len(ids))
		}
		for _, id := range ids {
			tr.Remove(id)
		}
		calls++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(calls*1000), "ns/session")
}

// A tick's worth of work with 100,000 sessions: 1,000 keepalives, each
// making its session due, then one Checkpoints call handing out the batch
// of 1,000 and the Checkpointed calls when it applies. Reported per
// keepalive+checkpoint.
func BenchmarkCheckpointsBatch100k(b *testing.B) {
	tr, ids := benchTracker(b)
	now := at(0)
	next := 0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		tr.Observe(now)
		for range 1000 {
			if _, err := tr.Keepalive(now, ids[next%len(ids)]); err != nil {
				b.Fatal(err)
			}
			next++
		}
		cps := tr.Checkpoints(now)
		if len(cps) == 0 {
			b.Fatal("no checkpoints due")
		}
		for _, cp := range cps {
			tr.Checkpointed(cp.ID, cp.ExpiresAt)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/session")
}

// The steady state of a leader with 100,000 live sessions (TTL 3–30 s,
// a keepalive every TTL/3): per 100 ms tick, the keepalives due, Observe,
// Expired, Checkpoints and the Checkpointed calls of the batch applied.
// Reported per keepalive, with all the tick's work charged to them.
func BenchmarkSteadyState100k(b *testing.B) {
	const tick = 100 * time.Millisecond
	rng := rand.New(rand.NewSource(2))
	// Keepalives are scheduled in a ring of tick buckets.
	ring := make([][]ID, int(10*time.Second/tick)+1)
	period := make(map[ID]int, benchSessions)
	leases := make([]Lease, 0, benchSessions)
	for id := ID(1); id <= benchSessions; id++ {
		ttl := time.Duration(3+rng.Intn(28)) * time.Second
		p := int(ttl / 3 / tick)
		period[id] = p
		slot := 1 + rng.Intn(p)
		ring[slot] = append(ring[slot], id)
		leases = append(leases, Lease{ID: id, TTL: ttl, ExpiresAt: wall(ttl)})
	}
	tr, _ := NewTracker(TrackerConfig{Grace: time.Second})
	tr.Promote(at(0), leases)
	now, n, keepalives := at(0), 0, 0
	for b.Loop() {
		now = now.Add(tick)
		tr.Observe(now)
		due := ring[n%len(ring)]
		ring[n%len(ring)] = nil
		for _, id := range due {
			if _, err := tr.Keepalive(now, id); err != nil {
				b.Fatal(err)
			}
			next := (n + period[id]) % len(ring)
			ring[next] = append(ring[next], id)
		}
		keepalives += len(due)
		if ids := tr.Expired(now); len(ids) != 0 {
			b.Fatalf("%d live sessions expired", len(ids))
		}
		for _, cp := range tr.Checkpoints(now) {
			tr.Checkpointed(cp.ID, cp.ExpiresAt)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(1, keepalives)), "ns/keepalive")
	b.ReportMetric(float64(keepalives)/float64(b.N), "keepalives/tick")
}
