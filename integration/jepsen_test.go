package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// RunSpec is one run: a cluster, the workloads on it, and the nemesis.
type RunSpec struct {
	Nodes    int
	Timing   Timing
	Faults   []Fault
	Sched    Schedule
	Duration time.Duration // of the fault schedule
	Seed     uint64

	KVWorkers, LockWorkers, Watchers int
	// SessionTTL is the kept session's TTL and the lock workers'.
	SessionTTL time.Duration
}

// RunStats is what a run did and found.
type RunStats struct {
	Ops, Unknown, LockGrants, LockRejected, WatchEvents, AckedUnique int
	Faults                                                           map[string]int
	Histories                                                        int
	Inconclusive                                                     int
	Anomalies                                                        []string
}

func (s *RunStats) add(o RunStats) {
	s.Ops += o.Ops
	s.Unknown += o.Unknown
	s.LockGrants += o.LockGrants
	s.LockRejected += o.LockRejected
	s.WatchEvents += o.WatchEvents
	s.AckedUnique += o.AckedUnique
	s.Histories += o.Histories
	s.Inconclusive += o.Inconclusive
	s.Anomalies = append(s.Anomalies, o.Anomalies...)
	if s.Faults == nil {
		s.Faults = map[string]int{}
	}
	for k, v := range o.Faults {
		s.Faults[k] += v
	}
}

func (s RunStats) String() string {
	var fs []string
	for k, v := range s.Faults {
		fs = append(fs, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(fs)
	return fmt.Sprintf("%d KV operations (%d unknown outcome), %d unique keys acknowledged, %d lock grants (%d stale accesses refused by the resource), "+
		"%d watch events; faults: %s; histories checked: %d (%d inconclusive); anomalies: %d",
		s.Ops, s.Unknown, s.AckedUnique, s.LockGrants, s.LockRejected, s.WatchEvents, strings.Join(fs, " "), s.Histories, s.Inconclusive, len(s.Anomalies))
}

var fastSchedule = Schedule{QuietMin: 300 * time.Millisecond, QuietMax: 800 * time.Millisecond,
	HoldMin: 800 * time.Millisecond, HoldMax: 2 * time.Second}

// runJepsen runs spec and checks every history. It reports anomalies
// with t.Errorf and returns the stats.
func runJepsen(t *testing.T, spec RunSpec) RunStats {
	t.Helper()
	if spec.SessionTTL == 0 {
		spec.SessionTTL = 5 * time.Second
	}
	c := NewCluster(t, ClusterOptions{Nodes: spec.Nodes, Timing: spec.Timing})
	c.Logf("seed %d, %d nodes, faults %v, %v", spec.Seed, spec.Nodes, faultNames(spec.Faults), spec.Duration)
	ctl := c.Control()
	bg := context.Background()
	start, err := ctl.KV().Put(bg, "kv/start", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}

	// Watchers first, from the revision after the start marker.
	watchCtx, stopWatch := context.WithCancel(bg)
	defer stopWatch()
	var watchWG sync.WaitGroup
	var watchers []*WatchRecorder
	for i := 0; i < spec.Watchers; i++ {
		watchers = append(watchers, Watch(watchCtx, &watchWG, i, c.NewClient(0, i+1, fmt.Sprintf("watcher%d", i)), "kv/", start.Revision+1))
	}
	keeper, err := KeepSession(bg, c.NewClient(0, 2, "keeper"), spec.SessionTTL)
	if err != nil {
		t.Fatal(err)
	}

	kvw := NewKVWorkload(4)
	lw := NewLockWorkload("lk/a", kvw.Hist)
	opTimeout := 4 * c.timing.ElectionTimeoutMax()
	workCtx, stopWork := context.WithCancel(bg)
	defer stopWork()
	var wg sync.WaitGroup
	for i := 0; i < spec.KVWorkers; i++ {
		cl := c.NewClient(0, i, fmt.Sprintf("kv%d", i))
		wg.Add(1)
		go func() { // KV worker: ends with workCtx or after its operations
			defer wg.Done()
			kvw.Run(workCtx, i, cl, spec.Seed, 20000, opTimeout, 5*time.Millisecond)
		}()
	}
	for i := 0; i < spec.LockWorkers; i++ {
		cl := c.NewClient(0, i+1, fmt.Sprintf("lock%d", i))
		wg.Add(1)
		go func() { // lock worker: ends with workCtx or after its rounds
			defer wg.Done()
			lw.Run(workCtx, i, cl, spec.Seed, 5000, spec.SessionTTL)
		}()
	}
	if spec.LockWorkers > 0 {
		mon := c.NewClient(0, 0, "lock-monitor")
		wg.Add(1)
		go func() { // lock monitor: ends with workCtx
			defer wg.Done()
			lw.Monitor(workCtx, mon, 20*time.Millisecond)
		}()
	}

	nemCtx, stopNem := context.WithTimeout(bg, spec.Duration)
	nem := NewNemesis(c, spec.Seed, spec.Faults, spec.Sched)
	nem.Run(nemCtx) // in the test goroutine: the harness may t.Fatal
	stopNem()
	c.HealAll()
	c.Logf("faults over; waiting for the cluster to settle")
	c.WaitStable(60 * time.Second)
	// Let the workload run on the healed cluster for a moment: clients
	// that backed off come back, and their writes land on the new leader.
	sleepCtx(bg, 500*time.Millisecond)
	stopWork()
	wg.Wait()

	var stats RunStats
	stats.Faults = nem.Injected()
	report := func(kind string, as []string) {
		for _, a := range as {
			t.Errorf("%s anomaly: %s", kind, a)
		}
		stats.Anomalies = append(stats.Anomalies, as...)
	}
	fctx, cancel := context.WithTimeout(bg, 60*time.Second)
	defer cancel()

	// No acknowledged write lost.
	lost, acked, err := kvw.CheckLostWrites(fctx, ctl)
	if err != nil {
		t.Fatal(err)
	}
	stats.AckedUnique = acked
	stats.Histories++
	report("lost-write", lost)

	// Linearizability (with a last read of every register).
	if err := kvw.FinalReads(fctx, ctl, spec.KVWorkers); err != nil {
		t.Fatal(err)
	}
	stats.Ops, stats.Unknown = kvw.Hist.Len()
	lin, conclusive := kvw.Hist.CheckLinearizable(t.Name(), 2*time.Minute)
	stats.Histories++
	if !conclusive {
		stats.Inconclusive++
		t.Logf("linearizability check inconclusive within its time limit (%d operations)", stats.Ops)
	}
	report("linearizability", lin)

	// Locks and fencing.
	if spec.LockWorkers > 0 {
		la, grants := lw.Check()
		stats.LockGrants = grants
		_, stats.LockRejected, _ = lw.Res.Stats()
		stats.Histories++
		report("lock", la)
		if grants == 0 {
			t.Errorf("no lock was granted in %v: the lock workload checked nothing", spec.Duration)
		}
	}

	// Watches: a last write, seen by every watcher, closes the history.
	end, err := ctl.KV().Put(fctx, "kv/end", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range watchers {
		for !w.Sees("kv/end") && sleepCtx(fctx, 20*time.Millisecond) {
		}
	}
	stopWatch()
	watchWG.Wait()
	wa, evs := CheckWatchers(watchers, kvw.Revisions(), end.Revision-1)
	stats.WatchEvents = evs
	stats.Histories += len(watchers)
	report("watch", wa)

	// Sessions: the kept session survived everything.
	stats.Histories++
	report("session", keeper.Check(fctx, ctl))

	if stats.Ops < 50 {
		t.Errorf("only %d KV operations in %v: the workload barely ran", stats.Ops, spec.Duration)
	}
	c.Logf("summary: %v", stats)
	return stats
}

func faultNames(fs []Fault) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Name)
	}
	return out
}

func defaultRun(t *testing.T, nodes int, faults ...Fault) RunSpec {
	return RunSpec{Nodes: nodes, Timing: fastTiming, Faults: faults, Sched: fastSchedule, Duration: 12 * time.Second,
		Seed: seedFor(t), KVWorkers: 4, LockWorkers: 3, Watchers: 2}
}

func TestNemesisKill(t *testing.T) {
	runJepsen(t, defaultRun(t, 3, faultKillLeader, faultKillFollower))
}

func TestNemesisPause(t *testing.T) {
	runJepsen(t, defaultRun(t, 3, faultPauseLeader, faultPauseFollower))
}

func TestNemesisPartitionMajorityMinority(t *testing.T) {
	runJepsen(t, defaultRun(t, 5, faultMinority))
}

func TestNemesisIsolatedLeader(t *testing.T) {
	runJepsen(t, defaultRun(t, 3, faultIsolateLeader))
}

func TestNemesisBridge(t *testing.T) {
	runJepsen(t, defaultRun(t, 5, faultBridge))
}

func TestNemesisOneWayAndSlowLinks(t *testing.T) {
	runJepsen(t, defaultRun(t, 3, faultOneWayLeader, faultOneWayLeaderIn, faultSlowLeader))
}

func TestNemesisRollingRestart(t *testing.T) {
	spec := defaultRun(t, 3, faultRollingRestart)
	spec.Sched = Schedule{QuietMin: 500 * time.Millisecond, QuietMax: time.Second, HoldMin: 0, HoldMax: 0}
	spec.Duration = 8 * time.Second
	runJepsen(t, spec)
}
