package consensus_test

// Review of the driver's asynchronous writes (writer goroutine): failure
// and stop paths that must never leave a node running without durability
// or storing a hard state its log does not back, and an audit, on the real
// Node, that every message leaves only once what it vouches for is durable.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
)

var errDiskDied = errors.New("disk died")

// gatedStore is an inmem.Store whose writes of entries can be held at a
// gate and made to fail when it opens, like a disk that hangs and then
// reports an I/O error. Writes of a hard state alone go through.
type gatedStore struct {
	*inmem.Store
	mu      sync.Mutex
	gate    chan struct{} // non-nil: a Save with entries waits until it is closed
	fail    bool          // a Save with entries fails (checked after the gate)
	waiting chan struct{} // gets a value when a Save starts waiting (capacity 1)
}

func newGatedStore(s *inmem.Store) *gatedStore {
	return &gatedStore{Store: s, waiting: make(chan struct{}, 1)}
}

func (s *gatedStore) Save(hs *consensus.HardState, ents []consensus.Entry) error {
	if len(ents) == 0 {
		return s.Store.Save(hs, ents)
	}
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		select {
		case s.waiting <- struct{}{}:
		default:
		}
		<-g
	}
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return errDiskDied
	}
	return s.Store.Save(hs, ents)
}

// hold makes later writes of entries wait; the returned release opens the
// gate, failing them (and every later one) if fail is set.
func (s *gatedStore) hold() (release func(fail bool)) {
	g := make(chan struct{})
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
	var once sync.Once
	return func(fail bool) {
		once.Do(func() {
			s.mu.Lock()
			s.gate, s.fail = nil, fail
			s.mu.Unlock()
			close(g)
		})
	}
}

func (s *gatedStore) heal() {
	s.mu.Lock()
	s.fail = false
	s.mu.Unlock()
}

// newGatedCluster starts n nodes over gated stores (one per node, kept
// across restarts).
func newGatedCluster(t *testing.T, size int, tweak func(*consensus.NodeConfig)) (*cluster, map[consensus.NodeID]*gatedStore) {
	stores := map[consensus.NodeID]*gatedStore{}
	c := newCluster(t, size, func(cfg *consensus.NodeConfig) {
		s := stores[cfg.Raft.ID]
		if s == nil {
			s = newGatedStore(cfg.LogStore.(*inmem.Store))
			stores[cfg.Raft.ID] = s
		}
		cfg.LogStore, cfg.StableStore = s, s
		if tweak != nil {
			tweak(cfg)
		}
	})
	return c, stores
}

// TestNodeWriteFailingUnderSyncSnapshotStopsNode: with a state machine
// that cannot capture a snapshot cheaply, maybeSnapshot writes it on the
// loop and compacts at once, which first waits for the write in flight.
// When that write fails, the node must stop like after any failed write.
// Found in review: the error was dropped there, so the node ran on with
// the core still waiting for Persisted, never writing again (a leader
// kept committing through its followers with nothing on its own disk)
// and never stopping.
func TestNodeWriteFailingUnderSyncSnapshotStopsNode(t *testing.T) {
	c, stores := newGatedCluster(t, 3, snapshotEvery(8, 0))
	ctx := testContext(t)
	lead := c.waitLeader()
	c.propose(ctx, "a")
	c.propose(ctx, "b") // no-op, a, b: 3 applied and durable on the leader
	n := c.nodes[lead]
	if st := n.Status(); st.Applied >= 8 || st.LogBase != 0 {
		t.Fatalf("setup: leader applied %d, log base %d before the stall; want < 8 and 0", st.Applied, st.LogBase)
	}
	release := stores[lead].hold()
	t.Cleanup(func() { release(false) })
	// Each commits through the followers while the leader's write hangs;
	// the fifth takes applied to 8, and the snapshot after it must
	// compact entries 1..3, which waits for the write.
	for i := 0; i < 5; i++ {
		pctx, cancel := context.WithTimeout(ctx, waitTimeout)
		_, err := n.Propose(pctx, []byte(fmt.Sprintf("during-%d", i)))
		cancel()
		if err != nil {
			t.Fatalf("proposal %d with the leader's disk stalled: %v", i, err)
		}
	}
	waitFor(t, waitTimeout, func() bool { return c.snaps[lead].Count() > 0 }, "the leader to write its snapshot")
	release(true)
	select {
	case <-n.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("leader %d still runs %v after its write failed (status %+v)", lead, waitTimeout, n.Status())
	}
	if err := n.Err(); !errors.Is(err, errDiskDied) || !errors.Is(err, consensus.ErrStopped) {
		t.Fatalf("Err() = %v, want ErrStopped wrapping the store's error", err)
	}
}

// loopWaitsForWriteAtStop reports whether a node's loop is blocked in
// waitWrite on its way to stopping (waitWrite's other callers are
// snapshotTaken and quiesce).
func loopWaitsForWriteAtStop() bool {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "consensus.(*Node).waitWrite") &&
			!strings.Contains(g, "snapshotTaken") && !strings.Contains(g, "quiesce") {
			return true
		}
	}
	return false
}

// TestNodeStopAfterFailedWriteStoresNoCommitPastLog: a follower's write
// of entries that carries a commit index covering them (it catches up
// after a partition) hangs, the node is stopped, and the write fails.
// Stopping stores the unsynced commit index (flushCommit), but the one it
// holds came with the failed write: stored, it points past the stored
// log, and the node cannot start again ("commit index beyond the last
// log index"). Found in review. The stop must also say the write failed.
func TestNodeStopAfterFailedWriteStoresNoCommitPastLog(t *testing.T) {
	c, stores := newGatedCluster(t, 3, nil)
	ctx := testContext(t)
	lead := c.waitLeader()
	c.propose(ctx, "a")
	f := c.follower(lead)
	c.waitApplied("a")
	stored0, err := c.stores[f].LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	c.net.Isolate(f)
	for i := 0; i < 3; i++ {
		c.propose(ctx, fmt.Sprintf("while-%d-is-away", f))
	}
	release := stores[f].hold()
	t.Cleanup(func() { release(false) })
	c.net.Heal()
	select {
	case <-stores[f].waiting:
	case <-time.After(waitTimeout):
		t.Fatalf("follower %d never wrote the entries it missed", f)
	}
	n := c.nodes[f]
	waitFor(t, waitTimeout, func() bool { return n.Status().Commit > stored0 },
		fmt.Sprintf("follower %d to learn a commit index past its stored log (%d)", f, stored0))

	c.net.Unregister(f)
	stopped := make(chan struct{})
	go func() { n.Stop(); close(stopped) }()
	t.Cleanup(func() { release(false); <-stopped })
	waitFor(t, waitTimeout, loopWaitsForWriteAtStop, "the stopping loop to wait for the write in flight")
	release(true)
	<-stopped
	delete(c.nodes, f)

	if err := n.Err(); !errors.Is(err, errDiskDied) {
		t.Errorf("Err() after a stop whose last write failed = %v, want it to wrap the store's error", err)
	}
	hs, _ := c.stores[f].HardState()
	last, _ := c.stores[f].LastIndex()
	if hs.Commit > last {
		t.Errorf("stored commit index %d is past the stored log's last index %d", hs.Commit, last)
	}
	stores[f].heal()
	c.start(f) // fails the test if the node cannot start from what is stored
	c.propose(ctx, "after")
	c.waitApplied("after")
}
