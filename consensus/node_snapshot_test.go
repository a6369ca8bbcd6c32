package consensus_test

import (
	"fmt"
	"testing"

	"github.com/lockd/lockd/consensus"
)

func snapshotEvery(entries, trailing int) func(*consensus.NodeConfig) {
	return func(c *consensus.NodeConfig) {
		c.SnapshotEntries = entries
		c.SnapshotTrailing = trailing
	}
}

// TestNodeSnapshotCompactsAndRestartsFromSnapshot: a node takes snapshots
// past the threshold, compacts its log (keeping the trailing entries), and
// a restart restores the state machine from the newest snapshot and
// replays only the log after it.
func TestNodeSnapshotCompactsAndRestartsFromSnapshot(t *testing.T) {
	c := newCluster(t, 3, snapshotEvery(40, 10))
	ctx := testContext(t)
	c.waitLeader()
	for i := 0; i < 200; i++ {
		c.propose(ctx, fmt.Sprintf("v%d", i))
	}
	c.waitApplied("v199")
	id := c.follower(c.currentLeader())
	waitFor(t, waitTimeout, func() bool { return c.nodes[id].Status().LogBase > 0 }, "the follower to compact its log")
	// A follower that fell more than the trailing entries behind may have
	// been sent a snapshot instead; otherwise it compacted its own log.
	if st := c.nodes[id].Status(); c.nodes[id].Metrics().SnapshotsInstalled.Load() == 0 && st.LogBase+10 > st.Applied {
		t.Fatalf("compaction kept fewer than the 10 trailing entries: base %d applied %d", st.LogBase, st.Applied)
	}
	first, _ := c.stores[id].FirstIndex()
	if first == 1 {
		t.Fatalf("the stored log still starts at %d after compaction", first)
	}
	if m := c.nodes[id].Metrics(); m.Snapshots.Load() == 0 {
		t.Fatal("no snapshot counted")
	}
	want := c.sms[id].entries()
	c.stop(id)
	c.start(id)
	got := c.sms[id].entries()
	if len(got) == 0 || len(got) > len(want) {
		t.Fatalf("restored state machine holds %d entries right after start, want the snapshot's (≤ %d)", len(got), len(want))
	}
	c.propose(ctx, "after-restart")
	c.waitApplied("after-restart")
	got = c.sms[id].entries()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("after restart entry %d is %+v, was %+v", i, got[i], want[i])
		}
	}
}

// TestNodeLaggingFollowerCatchesUpBySnapshot: a follower that was down
// while the others compacted past its log gets a snapshot streamed over
// the transport, installs it and applies the rest from the log.
func TestNodeLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	c := newCluster(t, 3, snapshotEvery(30, 5))
	ctx := testContext(t)
	lead := c.waitLeader()
	c.propose(ctx, "first")
	c.waitApplied("first")
	lag := c.follower(lead)
	c.stop(lag)
	for i := 0; i < 150; i++ {
		c.propose(ctx, fmt.Sprintf("w%d", i))
	}
	waitFor(t, waitTimeout, func() bool {
		for id, n := range c.nodes {
			if id != lag && n.Status().LogBase < 10 {
				return false
			}
		}
		return true
	}, "the running nodes to compact past the stopped follower's log")
	c.start(lag)
	c.propose(ctx, "last")
	c.waitApplied("last")
	if n := c.nodes[lag].Metrics().SnapshotsInstalled.Load(); n == 0 {
		t.Fatal("the lagging follower caught up without installing a snapshot")
	}
	ref := c.sms[c.currentLeader()].entries()
	got := c.sms[lag].entries()
	if len(got) != len(ref) {
		t.Fatalf("follower holds %d entries, leader %d", len(got), len(ref))
	}
	for i := range ref {
		if got[i] != ref[i] {
			t.Fatalf("entry %d: follower %+v, leader %+v", i, got[i], ref[i])
		}
	}
}
