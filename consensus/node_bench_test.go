package consensus_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
)

// syncedDisk makes every durable write pay a real fdatasync (a 4 KiB
// write to a file of its own, then Sync), so a benchmark shows how the
// driver overlaps disk waits with the rest. (time.Sleep is no model: its
// resolution is about a millisecond.)
type syncedDisk struct {
	*inmem.Store
	f *os.File
}

func (s syncedDisk) Save(hs *consensus.HardState, ents []consensus.Entry) error {
	if _, err := s.f.WriteAt(make([]byte, 4096), 0); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	return s.Store.Save(hs, ents)
}

// BenchmarkNodeProposeSlowDisk runs 3 Nodes in one process (in-memory
// network) whose stores fsync once per write, with 1 and 64 proposers,
// the loop writing on its writer goroutine or waiting for each write
// (SyncPersist), and reports proposals/s and the p50 proposal latency.
func BenchmarkNodeProposeSlowDisk(b *testing.B) {
	for _, bc := range []struct {
		conc int
		sync bool
	}{{1, false}, {1, true}, {64, false}, {64, true}} {
		conc := bc.conc
		persist := "async"
		if bc.sync {
			persist = "sync"
		}
		b.Run(fmt.Sprintf("proposers=%d/persist=%s", conc, persist), func(b *testing.B) {
			dir := b.TempDir()
			c := newCluster(b, 3, func(cfg *consensus.NodeConfig) {
				f, err := os.Create(filepath.Join(dir, fmt.Sprintf("sync-%d-%d", cfg.Raft.ID, time.Now().UnixNano())))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { f.Close() })
				cfg.LogStore = syncedDisk{cfg.LogStore.(*inmem.Store), f}
				cfg.StableStore = cfg.LogStore.(consensus.StableStore)
				cfg.Logger = nil
				cfg.SyncPersist = bc.sync
				// The test state machine's snapshots (JSON of every entry)
				// would dominate the profile, not the driver.
				cfg.SnapshotEntries = 1 << 30
			})
			lead := c.waitLeader()
			n := c.nodes[lead]
			ctx := context.Background()
			data := make([]byte, 256)
			var next atomic.Int64
			lats := make([][]time.Duration, conc)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := 0; w < conc; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						t := time.Now()
						if _, err := n.Propose(ctx, data); err != nil {
							b.Error(err)
							return
						}
						lats[w] = append(lats[w], time.Since(t))
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			var all []time.Duration
			for _, l := range lats {
				all = append(all, l...)
			}
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			b.ReportMetric(float64(b.N)/el.Seconds(), "proposals/s")
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			}
		})
	}
}
