package consensus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
)

// newStallingCluster runs 3 nodes whose writes can be made to hang
// (gatedStore), like a disk whose fsync stalls.
func newStallingCluster(t *testing.T, syncPersist bool) (*cluster, map[consensus.NodeID]*gatedStore) {
	stores := map[consensus.NodeID]*gatedStore{}
	c := newCluster(t, 3, func(cfg *consensus.NodeConfig) {
		s := stores[cfg.Raft.ID]
		if s == nil {
			s = newGatedStore(cfg.LogStore.(*inmem.Store))
			stores[cfg.Raft.ID] = s
		}
		cfg.LogStore, cfg.StableStore = s, s
		cfg.SyncPersist = syncPersist
	})
	return c, stores
}

// A leader whose disk hangs keeps the cluster writing: its loop goes on
// while the writer goroutine waits, appends reach the followers, and
// their two copies commit; linearizable reads are confirmed too, and no
// election is needed.
func TestLeaderWhoseDiskStallsKeepsCommittingThroughFollowers(t *testing.T) {
	c, stores := newStallingCluster(t, false)
	lead := c.waitLeader()
	ctx := context.Background()
	c.propose(ctx, "before")
	_, term := c.nodes[lead].Leader()

	hold := stores[lead].hold()
	release := func() { hold(false) }
	t.Cleanup(release) // before the cluster's own cleanup stops the nodes
	n := c.nodes[lead]
	for i := 0; i < 5; i++ {
		pctx, cancel := context.WithTimeout(ctx, waitTimeout)
		_, err := n.Propose(pctx, []byte(fmt.Sprintf("during-%d", i)))
		cancel()
		if err != nil {
			t.Fatalf("proposal %d with the leader's disk stalled: %v", i, err)
		}
	}
	select {
	case <-stores[lead].waiting:
	default:
		t.Fatal("the leader never wrote while stalled: the test proves nothing")
	}
	rctx, cancel := context.WithTimeout(ctx, waitTimeout)
	if _, err := n.ReadIndex(rctx); err != nil {
		t.Fatalf("linearizable read with the leader's disk stalled: %v", err)
	}
	cancel()
	if st := n.Status(); st.Role != consensus.Leader || st.Term != term {
		t.Fatalf("leadership changed during the stall: %s in term %d, was leader in term %d", st.Role, st.Term, term)
	}
	// The leader has not counted itself: what committed is durable on the
	// followers.
	f := c.follower(lead)
	if got, err := c.stores[f].LastIndex(); err != nil || got < n.Status().Commit {
		t.Fatalf("follower %d stores through %d but the leader committed %d", f, got, n.Status().Commit)
	}

	release()
	c.propose(ctx, "after")
	for _, id := range c.ids {
		id := id
		waitFor(t, waitTimeout, func() bool { return c.sms[id].has("after") },
			fmt.Sprintf("node %d applies the entry proposed after the stall", id))
	}
}

// The contrast: with SyncPersist the leader's loop waits for its own
// write, so nothing commits until the disk comes back.
func TestSyncPersistLeaderWaitsForItsStalledDisk(t *testing.T) {
	c, stores := newStallingCluster(t, true)
	lead := c.waitLeader()
	ctx := context.Background()
	c.propose(ctx, "before")

	hold := stores[lead].hold()
	release := func() { hold(false) }
	t.Cleanup(release)
	n := c.nodes[lead]
	done := make(chan error, 1)
	go func() {
		pctx, cancel := context.WithTimeout(ctx, waitTimeout)
		defer cancel()
		_, err := n.Propose(pctx, []byte("during"))
		done <- err
	}()
	<-stores[lead].waiting
	// The proposal cannot finish while the write it needs hangs on the
	// loop: a short wait shows it has not (a slow machine only makes
	// that more certain).
	select {
	case err := <-done:
		t.Fatalf("proposal finished (%v) while the SyncPersist leader's write hung", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	// Meanwhile the followers, hearing nothing, may have elected another
	// leader: the proposal may then be lost or of unknown outcome.
	if err := <-done; err != nil && !errors.Is(err, consensus.ErrOutcomeUnknown) && !errors.Is(err, consensus.ErrProposalLost) {
		t.Fatalf("proposal after the disk came back: %v", err)
	}
}
