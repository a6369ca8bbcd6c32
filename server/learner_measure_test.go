package server

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
	"github.com/lockd/lockd/store"
)

// TestMeasureLearnerCatchUp100MB (LOCKD_MEASURE=1) fills a 3-node
// in-process cluster (real snapshot files, peer transport on loopback,
// in-memory logs) with about 100 MB of keys, adds a fourth node and
// reports how long it takes to catch up — by InstallSnapshot, as the
// log was compacted — and the rate.
//
//	LOCKD_MEASURE=1 go test ./server -run TestMeasureLearnerCatchUp100MB -v
func TestMeasureLearnerCatchUp100MB(t *testing.T) {
	if os.Getenv("LOCKD_MEASURE") == "" {
		t.Skip("a measurement (about a minute, 1 GB of memory): set LOCKD_MEASURE=1")
	}
	var joinMembers []Member
	dirs := map[consensus.NodeID]string{}
	c := newTestClusterWith(t, 3, func(id consensus.NodeID, cfg *Config) {
		if id == 4 {
			cfg.Members = joinMembers
		}
		if dirs[id] == "" {
			dirs[id] = t.TempDir()
		}
		snaps, err := store.NewFileSnapshotStore(filepath.Join(dirs[id], "snapshots"), store.SnapshotOptions{Retain: 1})
		if err != nil {
			t.Fatal(err)
		}
		cfg.SnapshotStore = snaps
	})
	const (
		keys      = 100_000
		valueSize = 1000
		workers   = 64
	)
	lead := c.leader()
	value := make([]byte, valueSize)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= keys {
					return
				}
				if _, err := call[api.KVPutRequest, api.KVPutResponse](t, c.clients[lead], api.MethodKVPut,
					&api.KVPutRequest{Key: fmt.Sprintf("fill/%06d", i), Value: value}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("filled %d keys of %d bytes (%.0f MB) in %v", keys, valueSize, float64(keys*valueSize)/1e6, time.Since(start).Round(time.Millisecond))
	waitFor(t, time.Minute, "a snapshot that covers the fill", func() bool {
		return c.servers[lead].Node().Status().LogBase > keys/2
	})

	l := listen(t)
	resp := mustCall[api.MemberAddRequest, api.MemberChangeResponse](t, c.clients[lead], api.MethodMemberAdd,
		&api.MemberAddRequest{Name: "n4", PeerAddr: l.Addr().String(), Learner: true})
	for _, m := range resp.Members {
		joinMembers = append(joinMembers, Member{ID: consensus.NodeID(m.ID), Name: m.Name, PeerAddr: m.PeerAddr, Learner: m.Learner})
	}
	c.members = append(c.members, Member{ID: 4, Name: "n4", PeerAddr: l.Addr().String(), Learner: true})
	c.peerL[4] = l
	c.stores[4] = inmem.NewStore()
	joined := time.Now()
	c.start(4)
	waitFor(t, 5*time.Minute, "n4 to catch up", func() bool {
		st := c.servers[lead].Node().Status()
		return c.servers[4].Node().Status().Applied >= st.Commit && c.servers[4].FSM().Stats().Keys >= keys
	})
	took := time.Since(joined)
	var snapBytes int64
	if meta, rc, ok, err := c.servers[4].cfg.SnapshotStore.Latest(); err == nil && ok {
		rc.Close()
		snapBytes = meta.Size
	}
	t.Logf("FIGURE learner catch-up on %.0f MB of state: %v (snapshot %.0f MB, %.0f MB/s; installed %d snapshot(s))",
		float64(keys*valueSize)/1e6, took.Round(time.Millisecond), float64(snapBytes)/1e6, float64(snapBytes)/1e6/took.Seconds(),
		c.servers[4].Node().Metrics().SnapshotsInstalled.Load())
}
