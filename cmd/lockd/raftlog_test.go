package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/store"
)

// --raft-log picks the backend of a new data dir; a restart with the
// other value keeps the dir's, and its log.
func TestRaftLogFlagChoosesNewDirsBackend(t *testing.T) {
	for _, c := range []struct{ first, then string }{{store.RaftLogWAL, store.RaftLogBolt}, {store.RaftLogBolt, store.RaftLogWAL}} {
		t.Run(c.first, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "n1")
			start := func(raftLog string) *node {
				r := defaults()
				r.DataDir, r.RaftLog = dir, raftLog
				r.ClientAddr, r.PeerAddr, r.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", ""
				r.Tick, r.LogLevel = 10*time.Millisecond, "off"
				cfg, err := r.validate()
				if err != nil {
					t.Fatal(err)
				}
				n, err := startNode(cfg, hclog.NewNullLogger())
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			n := start(c.first)
			if got := n.store.RaftLog(); got != c.first {
				n.close()
				t.Fatalf("new data dir with --raft-log %s uses %s", c.first, got)
			}
			putKey(t, n.srv.ClientAddr(), "k", "v")
			last, err := n.store.LastIndex()
			if err != nil || last < 2 {
				n.close()
				t.Fatalf("LastIndex() = %d, %v after a put", last, err)
			}
			if err := n.close(); err != nil {
				t.Fatal(err)
			}
			n = start(c.then)
			defer n.close()
			if got := n.store.RaftLog(); got != c.first {
				t.Fatalf("data dir created with %s reopened with --raft-log %s uses %s", c.first, c.then, got)
			}
			if again, err := n.store.LastIndex(); err != nil || again < last {
				t.Fatalf("after restart LastIndex() = %d, %v; want at least %d", again, err, last)
			}
		})
	}
}
