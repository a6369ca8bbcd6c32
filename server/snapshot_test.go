package server

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/store"
)

// TestFollowerBehindCompactionCatchesUpBySnapshotOverRPC: with real
// snapshot files and the peer transport, a server that was down while the
// others snapshotted and compacted past its log rejoins through
// InstallSnapshot; its fsm then holds every key, and it restarts again
// from its own snapshot.
func TestFollowerBehindCompactionCatchesUpBySnapshotOverRPC(t *testing.T) {
	dirs := map[consensus.NodeID]string{}
	c := newTestClusterWith(t, 3, func(id consensus.NodeID, cfg *Config) {
		if dirs[id] == "" {
			dirs[id] = t.TempDir()
		}
		snaps, err := store.NewFileSnapshotStore(filepath.Join(dirs[id], "snapshots"), store.SnapshotOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg.SnapshotStore = snaps
		cfg.SnapshotEntries = 50
		cfg.SnapshotTrailing = 5
	})
	lead := c.leader()
	var lag consensus.NodeID
	for _, m := range c.members {
		if m.ID != lead {
			lag = m.ID
			break
		}
	}
	c.stop(lag)
	const keys = 300
	for i := 0; i < keys; i++ {
		mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[c.leader()], api.MethodKVPut,
			&api.KVPutRequest{Key: fmt.Sprintf("k/%04d", i), Value: []byte(fmt.Sprint(i))})
	}
	waitFor(t, 10*time.Second, "the running servers to compact their logs", func() bool {
		for _, s := range c.servers {
			if s.Node().Status().LogBase < 100 {
				return false
			}
		}
		return true
	})
	c.start(lag)
	waitFor(t, 20*time.Second, "the restarted server to catch up", func() bool {
		s := c.servers[lag]
		return s.Node().Metrics().SnapshotsInstalled.Load() > 0 && s.FSM().Stats().Keys == keys
	})
	get := mustCall[api.KVGetRequest, api.KVGetResponse](t, c.clients[lag], api.MethodKVGet,
		&api.KVGetRequest{Key: fmt.Sprintf("k/%04d", keys-1), Read: api.ReadHeader{Stale: true}})
	if get.KV == nil || string(get.KV.Value) != fmt.Sprint(keys-1) {
		t.Fatalf("local read on the caught-up server: %+v", get.KV)
	}
	// A restart now starts from the installed snapshot (and the log after it).
	c.stop(lag)
	c.start(lag)
	if got := c.servers[lag].FSM().Stats().Keys; got == 0 {
		t.Fatal("restart did not restore the fsm from the snapshot")
	}
}
