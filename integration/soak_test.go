package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestSoak runs long randomized schedules: round after round, a random
// cluster size, a random mix of faults and a random pace, each round
// checked like the default tests, until LOCKD_SOAK_DURATION (default
// 30m) has passed. It prints a summary: operations, faults injected,
// histories checked, anomalies found. Each round logs its seed; replay
// one with LOCKD_SEED=<seed> LOCKD_SOAK=1 LOCKD_SOAK_DURATION=1s.
//
//	LOCKD_SOAK=1 go test ./integration -run TestSoak -v -timeout 0
func TestSoak(t *testing.T) {
	if os.Getenv("LOCKD_SOAK") == "" {
		t.Skip("set LOCKD_SOAK=1 to run (long randomized fault schedules; LOCKD_SOAK_DURATION, default 30m)")
	}
	total := 30 * time.Minute
	if s := os.Getenv("LOCKD_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LOCKD_SOAK_DURATION=%q: %v", s, err)
		}
		total = d
	}
	master := uint64(time.Now().UnixNano())
	if s := os.Getenv("LOCKD_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LOCKD_SEED=%q: %v", s, err)
		}
		master = v
	}
	rng := rand.New(rand.NewPCG(master, 0x736f616b))
	var sum RunStats
	rounds, failed := 0, 0
	end := time.Now().Add(total)
	for time.Now().Before(end) {
		seed := master
		if rounds > 0 || os.Getenv("LOCKD_SEED") == "" {
			seed = rng.Uint64()
		}
		spec := soakSpec(seed, min(2*time.Minute, max(10*time.Second, time.Until(end))))
		var st RunStats
		ok := t.Run(fmt.Sprintf("round%d-seed%d", rounds, seed), func(t *testing.T) {
			st = runJepsen(t, spec)
		})
		rounds++
		if !ok {
			failed++
		}
		sum.add(st)
	}
	msg := fmt.Sprintf("SOAK SUMMARY: %d rounds in %v (%d failed): %v", rounds, total, failed, sum)
	t.Log(msg)
	fmt.Println(msg)
}

// soakSpec draws a round from seed: the cluster size, the faults, the
// pace.
func soakSpec(seed uint64, d time.Duration) RunSpec {
	rng := rand.New(rand.NewPCG(seed, 1))
	nodes := 3
	if rng.IntN(2) == 0 {
		nodes = 5
	}
	pool := append([]Fault(nil), allFaults...)
	if nodes == 5 {
		pool = append(pool, faultBridge)
	}
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	faults := pool[:1+rng.IntN(len(pool))]
	timing := fastTiming
	if rng.IntN(4) == 0 {
		timing = Timing{} // lockd's defaults now and then
	}
	scale := time.Duration(1 + rng.IntN(3))
	if timing.Tick == 0 {
		scale *= 3 // faults must outlast the longer election timeout
	}
	return RunSpec{Nodes: nodes, Timing: timing, Faults: faults, Duration: d, Seed: seed,
		Sched: Schedule{QuietMin: 200 * time.Millisecond * scale, QuietMax: time.Second * scale,
			HoldMin: 500 * time.Millisecond * scale, HoldMax: 3 * time.Second * scale},
		KVWorkers: 3 + rng.IntN(4), LockWorkers: 2 + rng.IntN(3), Watchers: 2, SessionTTL: 10 * time.Second}
}
