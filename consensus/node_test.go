package consensus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
)

// Ticks are short so elections take ~100–200 ms; nothing below depends on
// a tick's length, only on conditions polled with waitFor.
const (
	testTick    = 10 * time.Millisecond
	waitTimeout = 10 * time.Second
)

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-poll.C
	}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// applied is what testSM records and returns for each entry.
type applied struct {
	Index consensus.Index
	Data  string
}

// testSM appends every command to a list. gate, if set, blocks Apply until
// it is closed; entered is signalled as each Apply begins.
type testSM struct {
	mu      sync.Mutex // protects log
	log     []applied
	gate    chan struct{}
	entered chan consensus.Index
}

func (s *testSM) Apply(e consensus.Entry) any {
	if s.entered != nil {
		s.entered <- e.Index
	}
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := applied{Index: e.Index, Data: string(e.Data)}
	s.log = append(s.log, a)
	return a
}

// Snapshot writes the applied list as JSON.
func (s *testSM) Snapshot(w io.Writer) error {
	return json.NewEncoder(w).Encode(s.entries())
}

// Restore replaces the applied list with a snapshot's.
func (s *testSM) Restore(r io.Reader) error {
	var log []applied
	if err := json.NewDecoder(r).Decode(&log); err != nil {
		return fmt.Errorf("testSM: decoding snapshot: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = log
	return nil
}

func (s *testSM) entries() []applied {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

func (s *testSM) has(data string) bool {
	return slices.ContainsFunc(s.entries(), func(a applied) bool { return a.Data == data })
}

func testLogger(name string) hclog.Logger {
	if os.Getenv("LOCKD_TEST_LOG") == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: os.Stderr})
}

// cluster runs nodes over an inmem.Network.
type cluster struct {
	t      testing.TB
	net    *inmem.Network
	ids    []consensus.NodeID
	addrs  map[consensus.NodeID]string
	stores map[consensus.NodeID]*inmem.Store
	snaps  map[consensus.NodeID]*inmem.SnapshotStore
	sms    map[consensus.NodeID]*testSM
	nodes  map[consensus.NodeID]*consensus.Node // only running nodes
	// configure, if set, adjusts each node's config before it starts.
	configure func(*consensus.NodeConfig)
	closed    bool
}

func newCluster(t testing.TB, size int, configure func(*consensus.NodeConfig)) *cluster {
	t.Helper()
	c := &cluster{
		t: t, net: inmem.NewNetwork(), configure: configure,
		addrs:  map[consensus.NodeID]string{},
		stores: map[consensus.NodeID]*inmem.Store{},
		snaps:  map[consensus.NodeID]*inmem.SnapshotStore{},
		sms:    map[consensus.NodeID]*testSM{},
		nodes:  map[consensus.NodeID]*consensus.Node{},
	}
	for i := 1; i <= size; i++ {
		id := consensus.NodeID(i)
		c.ids = append(c.ids, id)
		c.addrs[id] = fmt.Sprintf("10.0.0.%d:7000", i)
		c.stores[id] = inmem.NewStore()
		c.snaps[id] = inmem.NewSnapshotStore()
	}
	for _, id := range c.ids {
		c.start(id)
	}
	t.Cleanup(c.close)
	return c
}

// start (re)starts node id from its stores with a fresh state machine,
// which replays the log.
func (c *cluster) start(id consensus.NodeID) {
	c.t.Helper()
	sm := &testSM{}
	cfg := consensus.NodeConfig{
		Raft:          consensus.Config{ID: id, Voters: c.ids, ElectionTicks: 10, HeartbeatTicks: 1},
		LogStore:      c.stores[id],
		StableStore:   c.stores[id],
		SnapshotStore: c.snaps[id],
		Transport:     c.net.Transport(id),
		StateMachine:  sm,
		TickInterval:  testTick,
		Logger:        testLogger(fmt.Sprintf("n%d", id)),
		PeerAddrs:     c.addrs,
		// As the server runs: commits with nothing else to send reach the
		// followers by the driver's timer (tests may turn it off).
		CommitBroadcastDelay: time.Millisecond,
	}
	if c.configure != nil {
		c.configure(&cfg)
	}
	n, err := consensus.StartNode(cfg)
	if err != nil {
		c.t.Fatalf("starting node %d: %v", id, err)
	}
	c.sms[id] = cfg.StateMachine.(*testSM)
	c.nodes[id] = n
	c.net.Register(id, n)
}

func (c *cluster) stop(id consensus.NodeID) {
	c.net.Unregister(id)
	c.nodes[id].Stop()
	delete(c.nodes, id)
}

func (c *cluster) close() {
	if c.closed {
		return
	}
	c.closed = true
	for id := range c.nodes {
		c.stop(id)
	}
	c.net.Close()
}

// waitLeader waits until exactly one of the running nodes among ids (all
// if none given) leads, and the others follow it in its term.
func (c *cluster) waitLeader(ids ...consensus.NodeID) consensus.NodeID {
	c.t.Helper()
	if len(ids) == 0 {
		ids = c.ids
	}
	var lead consensus.NodeID
	waitFor(c.t, waitTimeout, func() bool {
		lead = consensus.None
		var term consensus.Term
		for _, id := range ids {
			n, ok := c.nodes[id]
			if !ok {
				continue
			}
			if st := n.Status(); st.Role == consensus.Leader {
				if lead != consensus.None {
					return false
				}
				lead, term = id, st.Term
			}
		}
		if lead == consensus.None {
			return false
		}
		for _, id := range ids {
			if n, ok := c.nodes[id]; ok {
				if l, tm := n.Leader(); l != lead || tm != term {
					return false
				}
			}
		}
		return true
	}, fmt.Sprintf("one leader among %v", ids))
	return lead
}

// propose proposes data on the current leader, retrying through elections.
func (c *cluster) propose(ctx context.Context, data string) applied {
	c.t.Helper()
	res, err := c.tryPropose(ctx, data)
	if err != nil {
		c.t.Fatal(err)
	}
	return res
}

// tryPropose is propose for goroutines other than the test's, which must
// not call t.Fatal.
func (c *cluster) tryPropose(ctx context.Context, data string) (applied, error) {
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for {
		if lead := c.currentLeader(); lead != consensus.None {
			res, err := c.nodes[lead].Propose(ctx, []byte(data))
			if err == nil {
				return res.(applied), nil
			}
			if !retryable(err) {
				return applied{}, fmt.Errorf("proposing %q on leader %d: %w", data, lead, err)
			}
		}
		select {
		case <-ctx.Done():
			return applied{}, fmt.Errorf("proposing %q: no leader accepted it: %w", data, ctx.Err())
		case <-poll.C:
		}
	}
}

// retryable errors say the proposal was not applied and a leader change is
// under way.
func retryable(err error) bool {
	return errors.Is(err, consensus.ErrNotLeader) || errors.Is(err, consensus.ErrProposalLost) ||
		errors.Is(err, consensus.ErrTransferInProgress)
}

// currentLeader returns the running node that leads in the highest term.
// The map of nodes is only read here, so workers may call it concurrently.
func (c *cluster) currentLeader() consensus.NodeID {
	lead, term := consensus.None, consensus.Term(0)
	for id, n := range c.nodes {
		if st := n.Status(); st.Role == consensus.Leader && st.Term > term {
			lead, term = id, st.Term
		}
	}
	return lead
}

// waitApplied waits until every running node's state machine holds data.
func (c *cluster) waitApplied(data string) {
	c.t.Helper()
	waitFor(c.t, waitTimeout, func() bool {
		for id := range c.nodes {
			if !c.sms[id].has(data) {
				return false
			}
		}
		return true
	}, fmt.Sprintf("every node to apply %q", data))
}

func (c *cluster) follower(lead consensus.NodeID) consensus.NodeID {
	for _, id := range c.ids {
		if _, ok := c.nodes[id]; ok && id != lead {
			return id
		}
	}
	c.t.Fatal("no running follower")
	return consensus.None
}

func TestNodeElectsOneLeader(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader()
	st := c.nodes[lead].Status()
	if st.Term == 0 || st.Vote != lead {
		t.Fatalf("leader %d status %+v: want a term > 0 and a vote for itself", lead, st)
	}
	if len(st.Progress) != 3 {
		t.Fatalf("leader progress has %d peers, want 3: %+v", len(st.Progress), st.Progress)
	}
	// The no-op of the leader's term commits everywhere.
	waitFor(t, waitTimeout, func() bool {
		for _, n := range c.nodes {
			if s := n.Status(); s.Commit < 1 || s.Applied != s.Commit {
				return false
			}
		}
		return true
	}, "every node to commit and apply the leader's no-op")
}

func TestNodeProposeReturnsStateMachineResult(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	var last consensus.Index
	for i := range 20 {
		data := fmt.Sprintf("cmd-%d", i)
		res := c.propose(ctx, data)
		if res.Data != data || res.Index <= last {
			t.Fatalf("proposal %q: result %+v after index %d", data, res, last)
		}
		last = res.Index
	}
}

// ProposeOwned skips Propose's copy; the entry and its result are the same.
func TestNodeProposeOwnedAppliesTheHandedOverBytes(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	lead := c.waitLeader()
	var last consensus.Index
	for i := range 10 {
		data := []byte(fmt.Sprintf("owned-%d", i))
		v, err := c.nodes[lead].ProposeOwned(ctx, data)
		if err != nil {
			t.Fatalf("ProposeOwned on leader %d: %v", lead, err)
		}
		res := v.(applied)
		if res.Data != string(data) || res.Index <= last {
			t.Fatalf("proposal %q: result %+v after index %d", data, res, last)
		}
		last = res.Index
	}
	c.waitApplied("owned-9")
}

func TestNodeProposeOnFollowerNamesLeader(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader()
	f := c.follower(lead)
	_, err := c.nodes[f].Propose(testContext(t), []byte("x"))
	if !errors.Is(err, consensus.ErrNotLeader) {
		t.Fatalf("propose on follower: %v, want ErrNotLeader", err)
	}
	var nle *consensus.NotLeaderError
	if !errors.As(err, &nle) || nle.Leader != lead {
		t.Fatalf("propose on follower: %v, want a *NotLeaderError naming node %d", err, lead)
	}
	if !strings.Contains(err.Error(), c.addrs[lead]) {
		t.Fatalf("error %q does not give the leader's address %s", err, c.addrs[lead])
	}
}

func TestNodeStateMachinesApplySameSequence(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	const workers, each = 5, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := c.tryPropose(ctx, fmt.Sprintf("w%d-%d", w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, waitTimeout, func() bool {
		for _, id := range c.ids {
			if len(c.sms[id].entries()) != workers*each {
				return false
			}
		}
		return true
	}, fmt.Sprintf("every node to apply %d commands", workers*each))
	want := c.sms[1].entries()
	for _, id := range c.ids[1:] {
		if got := c.sms[id].entries(); !slices.Equal(got, want) {
			t.Fatalf("node %d applied %v\nnode 1 applied %v", id, got, want)
		}
	}
	for i := 1; i < len(want); i++ {
		if want[i].Index <= want[i-1].Index {
			t.Fatalf("applied out of order: %v then %v", want[i-1], want[i])
		}
	}
}

func TestNodeNewLeaderAfterLeaderStops(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	c.propose(ctx, "before")
	old := c.waitLeader()
	_, oldTerm := c.nodes[old].Leader()
	c.stop(old)
	lead := c.waitLeader()
	if lead == old {
		t.Fatalf("stopped node %d still leader", old)
	}
	if _, term := c.nodes[lead].Leader(); term <= oldTerm {
		t.Fatalf("new leader's term %d is not above the old term %d", term, oldTerm)
	}
	c.propose(ctx, "after")
	c.waitApplied("after")
	// The stopped node restarts from its stores and catches up.
	c.start(old)
	c.waitApplied("after")
	if got := c.sms[old].entries(); !slices.Equal(got, c.sms[lead].entries()) {
		t.Fatalf("restarted node %d applied %v, leader %v", old, got, c.sms[lead].entries())
	}
}

// Reference: §5.4 and §8. A leader cut off from the majority may still
// accept proposals; none of them may ever report success or apply.
func TestNodePartitionedLeaderProposalsNeverSucceed(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	c.propose(ctx, "before")
	old := c.waitLeader()
	var rest []consensus.NodeID
	for _, id := range c.ids {
		if id != old {
			rest = append(rest, id)
		}
	}
	c.net.Partition([]consensus.NodeID{old}, rest)

	const lost = 5
	errs := make(chan error, lost)
	for i := range lost {
		go func() {
			_, err := c.nodes[old].Propose(ctx, []byte(fmt.Sprintf("lost-%d", i)))
			errs <- err
		}()
	}
	lead := c.waitLeader(rest...)
	for i := range 2 * lost {
		if _, err := c.nodes[lead].Propose(ctx, []byte(fmt.Sprintf("new-%d", i))); err != nil {
			t.Fatalf("proposal on the majority's leader %d: %v", lead, err)
		}
	}
	c.net.Heal()
	kinds := map[string]int{}
	for range lost {
		err := <-errs
		switch {
		case err == nil:
			t.Fatal("a proposal on the partitioned leader succeeded")
		case errors.Is(err, consensus.ErrProposalLost):
			kinds["lost"]++
		case errors.Is(err, consensus.ErrNotLeader):
			kinds["not leader"]++ // the old leader had already stepped down
		default:
			t.Fatalf("proposal on the partitioned leader: %v, want ErrProposalLost or ErrNotLeader", err)
		}
	}
	t.Logf("proposals on the partitioned leader: %v", kinds)
	c.waitApplied(fmt.Sprintf("new-%d", 2*lost-1))
	for id := range c.nodes {
		for i := range lost {
			if data := fmt.Sprintf("lost-%d", i); c.sms[id].has(data) {
				t.Fatalf("node %d applied %q, proposed on a deposed leader", id, data)
			}
		}
	}
}

// Reference: dissertation §6.4. A read index covers every write
// acknowledged before the read, on the leader and on followers.
func TestNodeReadIndexCoversAcknowledgedWrites(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	w := c.propose(ctx, "write")
	// A node that knows no leader drops a read at once (by design); the
	// write can be acknowledged before the third node heard the leader.
	c.waitLeader()
	for _, id := range c.ids {
		idx, err := c.nodes[id].ReadIndex(ctx)
		if err != nil {
			t.Fatalf("ReadIndex on node %d: %v", id, err)
		}
		if idx < w.Index {
			t.Fatalf("ReadIndex on node %d = %d, below the acknowledged write at %d", id, idx, w.Index)
		}
		if !c.sms[id].has("write") {
			t.Fatalf("ReadIndex on node %d returned %d before its state machine applied the write at %d", id, idx, w.Index)
		}
	}
}

func TestNodeReadIndexWithoutLeaderIsDropped(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader()
	f := c.follower(lead)
	c.net.Isolate(f)
	waitFor(t, waitTimeout, func() bool {
		l, _ := c.nodes[f].Leader()
		return l == consensus.None
	}, "the isolated follower to lose its leader")
	_, err := c.nodes[f].ReadIndex(testContext(t))
	if !errors.Is(err, consensus.ErrReadDropped) {
		t.Fatalf("ReadIndex with no leader: %v, want ErrReadDropped", err)
	}
}

// Reference: dissertation §3.10.
func TestNodeTransferLeadership(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	c.propose(ctx, "before")
	lead := c.waitLeader()
	target := c.follower(lead)

	if err := c.nodes[target].TransferLeadership(ctx, lead); !errors.Is(err, consensus.ErrNotLeader) {
		t.Fatalf("transfer asked of a follower: %v, want ErrNotLeader", err)
	}
	if err := c.nodes[lead].TransferLeadership(ctx, target); err != nil {
		t.Fatalf("transfer from %d to %d: %v", lead, target, err)
	}
	if got := c.waitLeader(); got != target {
		t.Fatalf("leader after transfer is %d, want %d", got, target)
	}
	c.propose(ctx, "after")
	c.waitApplied("after")
}

// Stop fails proposals in flight with ErrStopped and leaves no goroutine.
func TestNodeStopWithProposalsInFlight(t *testing.T) {
	before := runtime.NumGoroutine()
	c := newCluster(t, 3, nil)
	ctx := testContext(t)
	lead := c.waitLeader()
	n := c.nodes[lead]

	var ok atomic.Int64
	errs := make(chan error, 8)
	for w := range cap(errs) {
		go func() {
			for i := 0; ; i++ {
				_, err := n.Propose(ctx, []byte(fmt.Sprintf("w%d-%d", w, i)))
				switch {
				case err == nil:
					ok.Add(1)
				case retryable(err):
					// A spurious election; Stop still ends the loop.
				default:
					errs <- err
					return
				}
			}
		}()
	}
	waitFor(t, waitTimeout, func() bool { return ok.Load() >= 50 }, "50 proposals to succeed")
	n.Stop()
	n.Stop() // a second Stop is harmless
	unknown := 0
	for range cap(errs) {
		err := <-errs
		if !errors.Is(err, consensus.ErrStopped) {
			t.Fatalf("proposal during Stop: %v, want ErrStopped", err)
		}
		if errors.Is(err, consensus.ErrOutcomeUnknown) {
			unknown++
		}
	}
	t.Logf("%d of %d proposals in flight at Stop were in the log (outcome unknown)", unknown, cap(errs))
	if _, err := n.Propose(ctx, []byte("late")); !errors.Is(err, consensus.ErrStopped) {
		t.Fatalf("proposal after Stop: %v, want ErrStopped", err)
	}
	if _, err := n.ReadIndex(ctx); !errors.Is(err, consensus.ErrStopped) {
		t.Fatalf("ReadIndex after Stop: %v, want ErrStopped", err)
	}
	c.close()
	waitFor(t, waitTimeout, func() bool { return runtime.NumGoroutine() <= before },
		fmt.Sprintf("goroutines to return to %d", before))
}

// noBatch hides the store's group commit so the driver writes entries and
// hard state separately.
type noBatch struct{ *inmem.Store }

func (noBatch) Save() {} // shadows Store.Save with a method BatchStore does not match

func TestNodeSingleNodeCommits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(*consensus.NodeConfig)
	}{
		{"group commit", nil},
		{"separate writes", func(cfg *consensus.NodeConfig) {
			s := noBatch{cfg.LogStore.(*inmem.Store)}
			cfg.LogStore, cfg.StableStore = s, s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1, tc.store)
			ctx := testContext(t)
			for i := range 10 {
				res, err := c.nodes[1].Propose(ctx, []byte(fmt.Sprintf("cmd-%d", i)))
				for errors.Is(err, consensus.ErrNotLeader) {
					c.waitLeader()
					res, err = c.nodes[1].Propose(ctx, []byte(fmt.Sprintf("cmd-%d", i)))
				}
				if err != nil || res.(applied).Data != fmt.Sprintf("cmd-%d", i) {
					t.Fatalf("proposal %d: %v, %v", i, res, err)
				}
			}
			idx, err := c.nodes[1].ReadIndex(ctx)
			if err != nil || idx < 11 {
				t.Fatalf("ReadIndex = %d, %v; want ≥ 11 (no-op and 10 commands)", idx, err)
			}
			want := c.sms[1].entries()
			c.stop(1)
			c.start(1)
			waitFor(t, waitTimeout, func() bool { return len(c.sms[1].entries()) >= len(want) }, "the restarted node to replay its log")
			if got := c.sms[1].entries(); !slices.Equal(got, want) {
				t.Fatalf("after restart applied %v, want %v", got, want)
			}
		})
	}
}

var errDiskFull = errors.New("disk full")

// failingStore fails every write once fail is set.
type failingStore struct {
	*inmem.Store
	fail atomic.Bool
}

func (s *failingStore) Save(hs *consensus.HardState, ents []consensus.Entry) error {
	if s.fail.Load() {
		return errDiskFull
	}
	return s.Store.Save(hs, ents)
}

func (s *failingStore) StoreEntries(ents []consensus.Entry) error {
	if s.fail.Load() {
		return errDiskFull
	}
	return s.Store.StoreEntries(ents)
}

func (s *failingStore) SetHardState(hs consensus.HardState) error {
	if s.fail.Load() {
		return errDiskFull
	}
	return s.Store.SetHardState(hs)
}

func TestNodePersistFailureStopsNode(t *testing.T) {
	var fs *failingStore
	c := newCluster(t, 1, func(cfg *consensus.NodeConfig) {
		fs = &failingStore{Store: cfg.LogStore.(*inmem.Store)}
		cfg.LogStore, cfg.StableStore = fs, fs
	})
	ctx := testContext(t)
	n := c.nodes[1]
	c.waitLeader()
	if _, err := n.Propose(ctx, []byte("ok")); err != nil {
		t.Fatalf("proposal before the failure: %v", err)
	}
	fs.fail.Store(true)
	_, err := n.Propose(ctx, []byte("doomed"))
	if !errors.Is(err, consensus.ErrStopped) || !errors.Is(err, errDiskFull) {
		t.Fatalf("proposal when the store fails: %v, want ErrStopped wrapping the store's error", err)
	}
	select {
	case <-n.Done():
	case <-ctx.Done():
		t.Fatal("node still running after a persist failure")
	}
	if err := n.Err(); !errors.Is(err, errDiskFull) {
		t.Fatalf("Err() = %v, want the store's error", err)
	}
	if _, err := n.ReadIndex(ctx); !errors.Is(err, consensus.ErrStopped) {
		t.Fatalf("ReadIndex after the failure: %v, want ErrStopped", err)
	}
	if c.sms[1].has("doomed") {
		t.Fatal("an entry that was never persisted was applied")
	}
}

// gatedCluster is a single node whose state machine blocks in Apply until
// the returned gate is closed.
func gatedCluster(t *testing.T, configure func(*consensus.NodeConfig)) (*cluster, *testSM, chan struct{}) {
	t.Helper()
	gate := make(chan struct{})
	// Apply skips the leader's no-op, so the gate holds only proposals.
	sm := &testSM{gate: gate, entered: make(chan consensus.Index, 16)}
	c := newCluster(t, 1, func(cfg *consensus.NodeConfig) {
		cfg.StateMachine = sm
		if configure != nil {
			configure(cfg)
		}
	})
	c.waitLeader()
	return c, sm, gate
}

func TestNodeProposalQueueIsBounded(t *testing.T) {
	c, sm, gate := gatedCluster(t, func(cfg *consensus.NodeConfig) { cfg.MaxPendingProposals = 1 })
	ctx := testContext(t)
	n := c.nodes[1]
	result := make(chan error, 1)
	go func() { _, err := n.Propose(ctx, []byte("first")); result <- err }()
	<-sm.entered // the loop is blocked applying "first", which holds the only slot
	if _, err := n.Propose(ctx, []byte("second")); !errors.Is(err, consensus.ErrOverloaded) {
		t.Fatalf("proposal beyond the limit: %v, want ErrOverloaded", err)
	}
	close(gate)
	if err := <-result; err != nil {
		t.Fatalf("proposal within the limit: %v", err)
	}
	if _, err := n.Propose(ctx, []byte("third")); err != nil {
		t.Fatalf("proposal after the slot was freed: %v", err)
	}
}

func TestNodeProposeCancelledIsOutcomeUnknown(t *testing.T) {
	c, sm, gate := gatedCluster(t, nil)
	defer close(gate)
	n := c.nodes[1]
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := n.Propose(ctx, []byte("slow")); errc <- err }()
	<-sm.entered
	cancel()
	err := <-errc
	if !errors.Is(err, consensus.ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled proposal: %v, want ErrOutcomeUnknown wrapping context.Canceled", err)
	}
}

func TestStartNodeRejectsCorruptLog(t *testing.T) {
	store := inmem.NewStore()
	ents := []consensus.Entry{
		{Index: 1, Term: 1, Type: consensus.EntryNoop},
		{Index: 2, Term: 1, Data: []byte("good")},
	}
	for i := range ents {
		ents[i].Seal()
	}
	ents[1].Data = []byte("evil") // bit rot after the checksum was taken
	if err := store.Save(&consensus.HardState{Term: 1, Vote: 1, Commit: 2}, ents); err != nil {
		t.Fatal(err)
	}
	_, err := consensus.StartNode(consensus.NodeConfig{
		Raft:     consensus.Config{ID: 1, Voters: []consensus.NodeID{1}},
		LogStore: store, StableStore: store,
		Transport: inmem.NewNetwork().Transport(1), StateMachine: &testSM{},
	})
	var corrupt *consensus.EntryCorruptError
	if !errors.As(err, &corrupt) || corrupt.Index != 2 {
		t.Fatalf("StartNode on a corrupt log: %v, want an *EntryCorruptError for entry 2", err)
	}
}

func TestNodeConfigValidate(t *testing.T) {
	cfg := consensus.NodeConfig{
		Raft:                 consensus.Config{ID: 1, Voters: []consensus.NodeID{1}},
		TickInterval:         -time.Second,
		InboxSize:            -3,
		CommitBroadcastDelay: -time.Millisecond,
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a config without stores")
	}
	for _, want := range []string{"log store is required", "stable store is required", "transport is required",
		"state machine is required", "tick interval -1s must be positive", "inbox size -3 must be positive",
		"commit broadcast delay -1ms must be at least 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not say %q", err, want)
		}
	}
	store := inmem.NewStore()
	cfg = consensus.NodeConfig{
		Raft:     consensus.Config{ID: 1, Voters: []consensus.NodeID{1}},
		LogStore: store, StableStore: store, Transport: inmem.NewNetwork().Transport(1), StateMachine: &testSM{},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.TickInterval != consensus.DefaultTickInterval || cfg.MaxPendingProposals != consensus.DefaultMaxPendingProposals ||
		cfg.MaxPendingReads != consensus.DefaultMaxPendingReads || cfg.InboxSize != consensus.DefaultInboxSize ||
		cfg.Now == nil || cfg.Logger == nil || cfg.Raft.ElectionTicks == 0 || cfg.Raft.DeferCommitBroadcast {
		t.Fatalf("Validate left defaults unset: %+v", cfg)
	}
	cfg.CommitBroadcastDelay = cfg.TickInterval
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "below the tick interval") {
		t.Fatalf("Validate took a commit broadcast delay of a whole tick: %v", err)
	}
	cfg.CommitBroadcastDelay = time.Millisecond
	if err := cfg.Validate(); err != nil || !cfg.Raft.DeferCommitBroadcast {
		t.Fatalf("Validate with a commit broadcast delay: %v, defer %v", err, cfg.Raft.DeferCommitBroadcast)
	}
}
