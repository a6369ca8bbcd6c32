package consensus_test

// Review of the driver's asynchronous writes (writer goroutine): failure
// and stop paths that must never leave a node running without durability
// or storing a hard state its log does not back, and an audit, on the real
// Node, that every message leaves only once what it vouches for is durable.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

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

// auditor checks every message a node hands its transport against what
// the stores hold durably at that moment (a store's state is visible only
// once its write returned: the delay comes before the write).
type auditor struct {
	mu     sync.Mutex
	stores map[consensus.NodeID]*slowStore
	snaps  map[consensus.NodeID]*inmem.SnapshotStore
	voters int
	bad    []string
	// Figures that show the audit saw the cases it is about.
	acks, votes, termMsgs, commits atomic.Int64
	maxCommit                      consensus.Index
}

// slowStore delays each write by a random 0–2 ms before making it, so
// that writes overlap the loop's work.
type slowStore struct {
	*inmem.Store
	mu  sync.Mutex
	rnd *rand.Rand
}

func (s *slowStore) Save(hs *consensus.HardState, ents []consensus.Entry) error {
	s.mu.Lock()
	d := time.Duration(s.rnd.Intn(2000)) * time.Microsecond
	s.mu.Unlock()
	time.Sleep(d)
	return s.Store.Save(hs, ents)
}

func (a *auditor) failf(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.bad) < 20 {
		a.bad = append(a.bad, fmt.Sprintf(format, args...))
	}
}

// durableThrough reports whether node id durably holds index i: in its
// stored log, or covered by a stored snapshot (read after the log: the
// prefix is deleted only once a snapshot covers it). term is the stored
// entry's term, 0 if covered by a snapshot.
func (a *auditor) durableAt(id consensus.NodeID, i consensus.Index) (held bool, term consensus.Term) {
	if i == 0 {
		return true, 0
	}
	a.mu.Lock()
	store, snaps := a.stores[id], a.snaps[id]
	a.mu.Unlock()
	if ents, err := store.Entries(i, i+1); err == nil && len(ents) == 1 {
		return true, ents[0].Term
	}
	meta, rc, ok, err := snaps.Latest()
	if err == nil && ok {
		rc.Close()
		if meta.Index >= i {
			return true, 0
		}
	}
	return false, 0
}

func (a *auditor) check(from consensus.NodeID, m consensus.Message) {
	a.mu.Lock()
	store := a.stores[from]
	a.mu.Unlock()
	hs, err := store.HardState()
	if err != nil {
		a.failf("reading node %d's hard state: %v", from, err)
		return
	}
	switch m.Type {
	case consensus.MsgPreVote, consensus.MsgPreVoteResp:
		// A pre-vote's term is the one it would campaign at: never durable.
		return
	}
	a.termMsgs.Add(1)
	if hs.Term < m.Term {
		a.failf("node %d sent %s to %d in term %d with term %d durable", from, m.Type, m.To, m.Term, hs.Term)
	}
	switch m.Type {
	case consensus.MsgVote:
		if hs.Term == m.Term && hs.Vote != from {
			a.failf("node %d asked %d for a vote in term %d with its durable vote %d", from, m.To, m.Term, hs.Vote)
		}
	case consensus.MsgVoteResp:
		if !m.Reject {
			a.votes.Add(1)
			if hs.Term == m.Term && hs.Vote != m.To {
				a.failf("node %d granted its vote to %d in term %d with its durable vote %d", from, m.To, m.Term, hs.Vote)
			}
		}
	case consensus.MsgAppResp:
		if !m.Reject {
			a.acks.Add(1)
			if ok, _ := a.durableAt(from, m.Index); !ok {
				a.failf("node %d acknowledged index %d to %d in term %d before holding it durably", from, m.Index, m.To, m.Term)
			}
		}
	case consensus.MsgApp, consensus.MsgHeartbeat:
		a.checkCommit(from, m)
	}
}

// checkCommit: a commit index a leader announces must be durable on a
// majority of voters with one term (or covered by their snapshots, which
// hold committed entries only).
func (a *auditor) checkCommit(from consensus.NodeID, m consensus.Message) {
	a.mu.Lock()
	seen := m.Commit <= a.maxCommit
	a.mu.Unlock()
	if seen {
		return
	}
	a.commits.Add(1)
	a.mu.Lock()
	ids := make([]consensus.NodeID, 0, len(a.stores))
	for id := range a.stores {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	byTerm := map[consensus.Term]int{}
	covered := 0
	for _, id := range ids {
		ok, term := a.durableAt(id, m.Commit)
		switch {
		case ok && term == 0:
			covered++
		case ok:
			byTerm[term]++
		}
	}
	best := 0
	for _, k := range byTerm {
		best = max(best, k)
	}
	if best+covered < a.voters/2+1 {
		a.failf("leader %d announced commit index %d in term %d durable on %d of %d voters (by term %v, by snapshot %d)",
			from, m.Commit, m.Term, best+covered, a.voters, byTerm, covered)
		return
	}
	a.mu.Lock()
	a.maxCommit = max(a.maxCommit, m.Commit)
	a.mu.Unlock()
}

// auditedTransport checks each message before passing it on; snapshot
// streaming goes straight through.
type auditedTransport struct {
	id consensus.NodeID
	a  *auditor
	consensus.Transport
}

func (t *auditedTransport) Send(msgs []consensus.Message) {
	for _, m := range msgs {
		t.a.check(t.id, m)
	}
	t.Transport.Send(msgs)
}

func (t *auditedTransport) SendSnapshot(ctx context.Context, to consensus.NodeID, meta consensus.SnapshotMeta, r io.Reader) error {
	return t.Transport.(consensus.SnapshotSender).SendSnapshot(ctx, to, meta, r)
}

// TestNodeMessagesLeaveOnlyOnceTheirStateIsDurable audits the real driver
// (writer goroutine, gather, quiesce, snapshots, stops): under load with
// writes that take a while, a follower cut off long enough to need a
// snapshot, and a leader stopped and restarted, every message leaves only
// once the term (and vote) it carries is durable on its sender, every
// acknowledgement only once the acknowledged index is, and every commit
// index a leader announces is durable on a majority.
func TestNodeMessagesLeaveOnlyOnceTheirStateIsDurable(t *testing.T) {
	for _, persist := range []string{"async", "sync"} {
		t.Run(persist, func(t *testing.T) { auditRun(t, persist == "sync") })
	}
}

func auditRun(t *testing.T, syncPersist bool) {
	a := &auditor{stores: map[consensus.NodeID]*slowStore{}, snaps: map[consensus.NodeID]*inmem.SnapshotStore{}, voters: 3}
	c := newCluster(t, 3, func(cfg *consensus.NodeConfig) {
		id := cfg.Raft.ID
		s := a.stores[id]
		if s == nil {
			s = &slowStore{Store: cfg.LogStore.(*inmem.Store), rnd: rand.New(rand.NewSource(int64(id)))}
			a.mu.Lock()
			a.stores[id] = s
			a.snaps[id] = cfg.SnapshotStore.(*inmem.SnapshotStore)
			a.mu.Unlock()
		}
		cfg.LogStore, cfg.StableStore = s, s
		cfg.Transport = &auditedTransport{id: id, a: a, Transport: cfg.Transport}
		cfg.SyncPersist = syncPersist
		cfg.SnapshotEntries, cfg.SnapshotTrailing = 40, 5
	})
	ctx := testContext(t)
	lead := c.waitLeader()

	// Proposers run while a follower is cut off, a bounded number each
	// (they read c.nodes, so nodes are stopped only once they are done).
	var wg sync.WaitGroup
	var proposed atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60 && ctx.Err() == nil; i++ {
				if _, err := c.tryPropose(ctx, fmt.Sprintf("w%d-%d", w, i)); err == nil {
					proposed.Add(1)
				}
			}
		}()
	}
	// A follower misses enough to need a snapshot, then rejoins.
	f := c.follower(lead)
	c.net.Isolate(f)
	waitFor(t, waitTimeout, func() bool { return c.nodes[lead].Status().LogBase > c.nodes[f].Status().LastIndex },
		fmt.Sprintf("leader %d to compact past what follower %d holds", lead, f))
	c.net.Heal()
	waitFor(t, waitTimeout, func() bool { return c.nodes[f].Metrics().SnapshotsInstalled.Load() > 0 },
		fmt.Sprintf("follower %d to install a snapshot", f))
	wg.Wait()
	// An election: the leader stops, the others elect, it comes back.
	c.stop(lead)
	newLead := c.waitLeader()
	for i := 0; i < 50; i++ {
		c.propose(ctx, fmt.Sprintf("after-%d", i))
	}
	c.start(lead)
	c.propose(ctx, "last")
	c.waitApplied("last")

	t.Logf("leader %d then %d; follower %d installed %d snapshots; proposed %d; audited %d messages with a term, %d acks, %d granted votes, %d commit advances",
		lead, newLead, f, c.nodes[f].Metrics().SnapshotsInstalled.Load(), proposed.Load(), a.termMsgs.Load(), a.acks.Load(), a.votes.Load(), a.commits.Load())
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.bad) > 0 {
		t.Fatalf("%d messages left before their state was durable, first:\n%s", len(a.bad), strings.Join(a.bad, "\n"))
	}
	if a.acks.Load() == 0 || a.votes.Load() == 0 || a.commits.Load() == 0 {
		t.Fatalf("the audit saw %d acks, %d granted votes and %d commit advances: it proves nothing", a.acks.Load(), a.votes.Load(), a.commits.Load())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestNodeLeaderChangeLogNamesNewTermDuringWrite: a follower whose write
// is in flight learns of a new leader in a new term. The core hands out
// the leader change at once but holds the new term's hard state for the
// next write; the "leader changed" line must still name the new term, or
// a failover reads as a new leader in the old term. Found in review: it
// printed the driver's copy of the hard state, one term behind.
func TestNodeLeaderChangeLogNamesNewTermDuringWrite(t *testing.T) {
	logs := map[consensus.NodeID]*syncBuffer{}
	c, stores := newGatedCluster(t, 3, func(cfg *consensus.NodeConfig) {
		b := logs[cfg.Raft.ID]
		if b == nil {
			b = &syncBuffer{}
			logs[cfg.Raft.ID] = b
		}
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("n%d", cfg.Raft.ID), Level: hclog.Info, Output: b})
		cfg.Raft.Logger = nil
	})
	ctx := testContext(t)
	lead := c.waitLeader()
	c.propose(ctx, "a")
	c.waitApplied("a")
	var held, target consensus.NodeID
	for _, id := range c.ids {
		if id != lead {
			if held == consensus.None {
				held = id
			} else {
				target = id
			}
		}
	}
	release := stores[held].hold()
	t.Cleanup(func() { release(false) })
	c.propose(ctx, "b") // commits through lead and target; held's write hangs
	select {
	case <-stores[held].waiting:
	case <-time.After(waitTimeout):
		t.Fatalf("node %d never wrote entry b", held)
	}
	_, oldTerm := c.nodes[lead].Leader()
	if err := c.nodes[lead].TransferLeadership(ctx, target); err != nil {
		t.Fatalf("transferring leadership from %d to %d: %v", lead, target, err)
	}
	_, newTerm := c.nodes[target].Leader()
	if newTerm <= oldTerm {
		t.Fatalf("setup: term %d after the transfer, was %d", newTerm, oldTerm)
	}
	want := fmt.Sprintf("leader=%d", target)
	var line string
	waitFor(t, waitTimeout, func() bool {
		for _, l := range strings.Split(logs[held].String(), "\n") {
			if strings.Contains(l, "leader changed") && strings.Contains(l, want) {
				line = l
				return true
			}
		}
		return false
	}, fmt.Sprintf("node %d to log its new leader %d", held, target))
	if !strings.Contains(line, fmt.Sprintf("term=%d ", newTerm)) {
		t.Fatalf("node %d logged its new leader in term %d as:\n%s", held, newTerm, line)
	}
	release(false)
}
