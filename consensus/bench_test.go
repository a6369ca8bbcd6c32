package consensus

import (
	"fmt"
	"math/rand"
	"runtime"
	"testing"
)

// benchCluster runs cores with an instant in-memory network and a no-op
// disk, so a benchmark measures the core alone.
type benchCluster struct {
	nodes map[NodeID]*Raft
	queue []Message
}

func newBenchCluster(b *testing.B, n int) *benchCluster {
	c := &benchCluster{nodes: map[NodeID]*Raft{}}
	var voters []NodeID
	for i := 1; i <= n; i++ {
		voters = append(voters, NodeID(i))
	}
	for _, id := range voters {
		r, err := New(Config{ID: id, Voters: voters, MaxEntriesPerMsg: 1024, MaxInflightMsgs: 256,
			Rand: rand.New(rand.NewSource(int64(id)))}, Restored{})
		if err != nil {
			b.Fatal(err)
		}
		c.nodes[id] = r
	}
	c.nodes[1].campaign(false, false)
	c.settle()
	if c.nodes[1].role != Leader {
		b.Fatal("node 1 did not become leader")
	}
	return c
}

func (c *benchCluster) ready(r *Raft) {
	for r.HasReady() {
		rd := r.Ready()
		c.queue = append(c.queue, rd.Messages...)
		c.queue = append(c.queue, rd.MessagesAfterPersist...)
		r.Advance(rd)
	}
}

func (c *benchCluster) settle() {
	for _, r := range c.nodes {
		c.ready(r)
	}
	for len(c.queue) > 0 {
		m := c.queue[0]
		c.queue = c.queue[1:]
		r := c.nodes[m.To]
		if err := r.Step(m); err != nil {
			panic(err)
		}
		c.ready(r)
	}
}

const benchLogBound = 1 << 16

// BenchmarkCommit measures committed entries per second through a 3-node
// core cluster, one batch of proposals per round trip.
func BenchmarkCommit(b *testing.B) {
	for _, batch := range []int{1, 256} {
		b.Run(fmt.Sprintf("nodes=3/batch=%d", batch), func(b *testing.B) {
			c := newBenchCluster(b, 3)
			leader := c.nodes[1]
			data := make([][]byte, batch)
			for i := range data {
				data[i] = make([]byte, 128)
			}
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if leader.log.lastIndex() > benchLogBound {
					// Production logs are bounded by snapshots; without
					// compaction yet, start over rather than measure the
					// cost of growing a multi-million-entry slice.
					b.StopTimer()
					c = newBenchCluster(b, 3)
					leader = c.nodes[1]
					b.StartTimer()
				}
				idx, _, err := leader.Propose(int64(i), data...)
				if err != nil {
					b.Fatal(err)
				}
				c.settle()
				if leader.log.applied < idx+Index(batch)-1 {
					b.Fatalf("batch at %d not applied (applied %d)", idx, leader.log.applied)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&ms1)
			entries := float64(b.N) * float64(batch)
			b.ReportMetric(entries/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/entries, "allocs/entry")
		})
	}
}
