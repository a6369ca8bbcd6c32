package consensus

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// ---------------------------------------------------------------------------
// Batched simulation: the real driver (node_loop.go) steps up to 256 inbox
// messages, and proposals/reads, between two Readies; the simulation in
// sim_test.go always runs Ready/Advance after every single input. This
// variant batches inputs per node and only sometimes runs the Ready.
// ---------------------------------------------------------------------------

func (s *simulation) stepBatched(readyProb float64) error {
	s.now++
	dirty := map[NodeID]bool{}
	flush := func(n *simNode) error {
		delete(dirty, n.id)
		return s.handleReady(n)
	}
	maybeFlush := func(n *simNode) error {
		if s.rng.Float64() < readyProb {
			return flush(n)
		}
		dirty[n.id] = true
		return nil
	}
	// A write in flight completes between any two inputs; the Ready
	// after it is batched like any other.
	maybeComplete := func() error {
		if !s.opts.async {
			return nil
		}
		for _, n := range s.nodes {
			if n.raft != nil && n.pending != nil && s.rng.Float64() < s.opts.completeRate {
				if err := s.completeWrite(n, false); err != nil {
					return err
				}
				if err := maybeFlush(n); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, n := range s.nodes {
		if n.raft != nil {
			n.raft.Tick()
			if err := maybeFlush(n); err != nil {
				return err
			}
		}
	}
	if err := maybeComplete(); err != nil {
		return err
	}
	for budget := 0; budget < 20000; budget++ {
		due := -1
		for i, sm := range s.net {
			if sm.at <= s.now {
				due = i
				if s.rng.Intn(3) == 0 {
					break
				}
			}
		}
		if due < 0 {
			// Nothing due: flush everyone dirty (their output may be due now).
			if len(dirty) == 0 {
				break
			}
			for _, n := range s.nodes {
				if dirty[n.id] && n.raft != nil {
					if err := flush(n); err != nil {
						return err
					}
				}
			}
			dirty = map[NodeID]bool{}
			continue
		}
		sm := s.net[due]
		s.net[due] = s.net[len(s.net)-1]
		s.net = s.net[:len(s.net)-1]
		to := s.node(sm.m.To)
		if to.raft == nil || s.cut[[2]NodeID{sm.m.From, sm.m.To}] {
			continue
		}
		if err := to.raft.Step(sm.m); err != nil {
			return fmt.Errorf("node %d refused %s from %d: %w", to.id, sm.m.Type, sm.m.From, err)
		}
		if err := maybeFlush(to); err != nil {
			return err
		}
		if err := maybeComplete(); err != nil {
			return err
		}
	}
	for _, n := range s.nodes {
		if dirty[n.id] && n.raft != nil {
			if err := flush(n); err != nil {
				return err
			}
		}
	}
	if err := s.deliverSnapshots(false); err != nil {
		return err
	}
	if s.healed {
		return nil
	}
	up := s.upNodes()
	if len(up) > 0 && s.rng.Float64() < s.opts.proposeRate {
		n := up[s.rng.Intn(len(up))]
		k := 1 + s.rng.Intn(3)
		data := make([][]byte, k)
		for i := range data {
			s.nextCmd++
			data[i] = []byte("cmd-" + strconv.Itoa(s.nextCmd))
		}
		n.raft.Propose(int64(s.now), data...)
		if s.rng.Float64() < 0.5 {
			if err := s.handleReady(n); err != nil {
				return err
			}
		}
	}
	up = s.upNodes()
	if len(up) > 0 && s.rng.Float64() < s.opts.readRate {
		n := up[s.rng.Intn(len(up))]
		s.nextRd++
		s.reads[s.nextRd] = pendingRead{node: n.id, minIndex: s.maxCommitted()}
		n.raft.ReadIndex(s.nextRd)
		if s.rng.Float64() < 0.5 {
			if err := s.handleReady(n); err != nil {
				return err
			}
		}
	}
	up = s.upNodes()
	if len(up) > 0 && s.rng.Float64() < s.opts.transferRate {
		n := up[s.rng.Intn(len(up))]
		to := s.ids[s.rng.Intn(len(s.ids))]
		_ = n.raft.TransferLeadership(to)
	}
	if err := s.randomFaults(); err != nil {
		return err
	}
	// Anything left unflushed at the end of the tick is flushed now, as the
	// driver's loop does before it selects again.
	for _, n := range s.nodes {
		if n.raft != nil {
			if err := s.handleReady(n); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *simulation) runWith(step func() error) error {
	for s.now < s.opts.chaosTicks {
		if err := step(); err != nil {
			return err
		}
	}
	if err := s.heal(); err != nil {
		return err
	}
	deadline := s.now + s.livenessBudget()
	var want entryKey
	for s.now < deadline {
		if err := step(); err != nil {
			return err
		}
		if want.Index != 0 {
			done := true
			for _, n := range s.nodes {
				if !s.hasApplied(n, want) {
					done = false
				}
			}
			if done {
				return s.checkReadsAnswered(step)
			}
			for _, n := range s.nodes {
				if n.raft.role == Leader && n.raft.term > want.Term {
					if t, ok := n.raft.log.term(want.Index); !ok || t != want.Term {
						want = entryKey{}
						break
					}
				}
			}
		}
		if want.Index == 0 {
			for _, n := range s.nodes {
				if n.raft.role == Leader && n.raft.leadTransferee == None {
					s.nextCmd++
					idx, term, err := n.raft.Propose(int64(s.now), []byte("live-"+strconv.Itoa(s.nextCmd)))
					if err == nil {
						want = entryKey{idx, term}
					}
					if err := s.handleReady(n); err != nil {
						return err
					}
					break
				}
			}
		}
	}
	var st []string
	for _, n := range s.nodes {
		st = append(st, n.describe())
	}
	return fmt.Errorf("liveness: proposal %v is not applied everywhere; %s", want, strings.Join(st, "; "))
}

// checkReadsAnswered: once healed and with a leader that commits, a read
// asked of any node must be answered (served or dropped) within a few
// election timeouts; the sim's checker only looks at reads that answer.
func (s *simulation) checkReadsAnswered(step func() error) error {
	answered := map[uint64]bool{}
	prev := s.onRead
	s.onRead = func(rs ReadState) {
		answered[rs.ID] = true
		if prev != nil {
			prev(rs)
		}
	}
	defer func() { s.onRead = prev }()
	ids := map[uint64]NodeID{}
	for _, n := range s.nodes {
		s.nextRd++
		ids[s.nextRd] = n.id
		s.reads[s.nextRd] = pendingRead{node: n.id, minIndex: s.maxCommitted()}
		n.raft.ReadIndex(s.nextRd)
		if err := s.handleReady(n); err != nil {
			return err
		}
	}
	for i := 0; i < 5*s.opts.electionTicks; i++ {
		if err := step(); err != nil {
			return err
		}
	}
	for id, node := range ids {
		if !answered[id] {
			return fmt.Errorf("read liveness: read %d on node %d never answered", id, node)
		}
	}
	return nil
}

func runBatchedSeed(seed int64) (err error) {
	o := optionsForSeed(seed, ruleIntact)
	hb := 1 + int(seed%3)
	o.configure = func(c *Config) { c.HeartbeatTicks = hb }
	if envInt("LOCKD_REVIEW_WIDE", 0) != 0 {
		o.nodes = 2 + int((seed/3)%4)
		o.electionTicks = []int{5, 10, 20}[(seed/12)%3]
		if o.electionTicks <= hb {
			o.electionTicks = hb + 4
		}
		// Two nodes with one entry per message and a window of one
		// replicate a long backlog slowly; give them time.
		o.livenessTicks = 3000
	}
	s := newSimulation(seed, o)
	readyProb := []float64{0.1, 0.3, 0.7}[seed%3]
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
		if err != nil {
			err = fmt.Errorf("%w\nlast events:\n  %s", err, strings.Join(s.trace, "\n  "))
		}
	}()
	return s.runWith(func() error { return s.stepBatched(readyProb) })
}

// TestBatchedSimulation runs the chaos simulation with the driver's
// batching (several inputs between two Readies) and heartbeat intervals > 1.
func TestBatchedSimulation(t *testing.T) {
	seeds := envInt("LOCKD_REVIEW_SEEDS", 300)
	first := envInt("LOCKD_REVIEW_FIRST_SEED", 1)
	failed := forSeeds(first, seeds, func(seed int64) bool {
		if err := runBatchedSeed(seed); err != nil {
			t.Errorf("batched seed %d: %v", seed, err)
			return true
		}
		return false
	})
	t.Logf("%d batched seeds from %d, %d failed", seeds, first, failed)
}

// ---------------------------------------------------------------------------
// Regression (found in review): a follower's forwarded read is silently lost when the leader it
// names has moved to a newer term (re-elected), and the follower ends up
// following the same node again: the core neither answers nor drops it, and
// the driver (which drops reads only when SoftState.Lead changes) keeps the
// caller waiting until its context expires (forever with Background), while
// holding one of MaxPendingReads slots.
// ---------------------------------------------------------------------------

// reelectOneWhileThreeIsCutOff leaves node 1 leader of term 3 and node 3 a
// follower of node 1 in term 1 that has not heard of terms 2 and 3.
func reelectOneWhileThreeIsCutOff(t *testing.T) *scenario {
	sc := newScenario(t, 3, noCheckQuorum)
	sc.elect(1)
	sc.propose(1, "a")
	sc.deliver()
	sc.isolate(3)
	sc.elect(2) // term 2
	sc.elect(1) // term 3: node 1 leads again
	if r3 := sc.r(3); r3.term != 1 || r3.lead != 1 || sc.r(1).term != 3 {
		t.Fatalf("setup: node 3 term %d lead %d, node 1 term %d", r3.term, r3.lead, sc.r(1).term)
	}
	sc.heal()
	return sc
}

func TestFollowerReadAnsweredWhenLeaderReelected(t *testing.T) {
	sc := reelectOneWhileThreeIsCutOff(t)
	sc.readIndex(3, 42) // MsgReadIndex in term 1 to node 1, now in term 3
	sc.tick(10 * sc.opts.electionTicks)
	if sc.r(3).term != 3 || sc.r(3).lead != 1 {
		t.Fatalf("node 3 should follow node 1 in term 3: term %d lead %d", sc.r(3).term, sc.r(3).lead)
	}
	// Node 3's leader is node 1 before and after: SoftState.Lead never
	// changed, so the driver will not drop the read either.
	if _, ok := sc.readResults[42]; !ok {
		t.Fatalf("read 42 from follower 3 was neither answered nor dropped after %d ticks: "+
			"node 1 ignored the lower-term MsgReadIndex", 10*sc.opts.electionTicks)
	}
}

// The same loss on the way back: the leader's answer (term 1) reaches the
// follower after it moved to term 3 under the same leader, and is ignored
// although it is a valid read index.
func TestFollowerReadAnswerKeptAfterTermChange(t *testing.T) {
	sc := newScenario(t, 3, noCheckQuorum)
	sc.elect(1)
	sc.propose(1, "a")
	sc.deliver()
	var held []Message
	sc.drop = func(m Message) bool {
		if m.Type == MsgReadIndexResp {
			held = append(held, m)
			return true
		}
		return false
	}
	sc.readIndex(3, 43)
	sc.deliver()
	sc.drop = nil
	if len(held) != 1 || held[0].Reject {
		t.Fatalf("setup: want one served answer held back, have %+v", held)
	}
	sc.isolate(3)
	sc.elect(2)
	sc.elect(1)
	sc.heal()
	sc.tick(2)
	if sc.r(3).term != 3 || sc.r(3).lead != 1 {
		t.Fatalf("setup: node 3 term %d lead %d", sc.r(3).term, sc.r(3).lead)
	}
	sc.net = append(sc.net, simMsg{m: held[0]})
	sc.deliver()
	sc.tick(10 * sc.opts.electionTicks)
	if _, ok := sc.readResults[43]; !ok {
		t.Fatalf("read 43: the leader's answer (term %d) arrived at node 3 in term %d and was dropped; "+
			"the read is neither served nor failed", held[0].Term, sc.r(3).term)
	}
}

// ---------------------------------------------------------------------------
// Regression (found in review): the driver's non-batch persist path (node_loop.go persist: entries
// first, then the hard state) can crash between the two writes when a
// follower learns a new term from the MsgApp that carries entries of that
// term. The durable state is then "last log term > current term", which
// checkRestored called corrupt, so the node could not start again. (Both stores in
// the tree implement BatchStore, so this bites only a split LogStore /
// StableStore.)
// ---------------------------------------------------------------------------

func TestRestartAfterCrashBetweenEntriesAndHardState(t *testing.T) {
	e1 := Entry{Index: 1, Term: 1, Type: EntryNoop}
	e1.Seal()
	durableHS := HardState{Term: 1, Vote: 1, Commit: 1}
	durableLog := []Entry{e1}
	r, err := New(Config{ID: 3, Voters: []NodeID{1, 2, 3}}, Restored{HardState: durableHS, Entries: durableLog})
	if err != nil {
		t.Fatal(err)
	}
	r.Ready()
	r.Advance(Ready{})
	// The leader of term 2 sends its no-op.
	e2 := Entry{Index: 2, Term: 2, Type: EntryNoop}
	e2.Seal()
	if err := r.Step(Message{Type: MsgApp, From: 2, To: 3, Term: 2, PrevIndex: 1, PrevTerm: 1, Entries: []Entry{e2}, Commit: 1}); err != nil {
		t.Fatal(err)
	}
	rd := r.Ready()
	if !rd.MustSaveHardState || rd.HardState.Term != 2 || len(rd.Entries) != 1 {
		t.Fatalf("setup: ready %+v", rd)
	}
	// node_loop.go persist without a BatchStore: StoreEntries(rd.Entries)...
	durableLog = append(durableLog, rd.Entries...)
	// ...crash before SetHardState(rd.HardState). Nothing was acknowledged.
	r2, err := New(Config{ID: 3, Voters: []NodeID{1, 2, 3}}, Restored{HardState: durableHS, Entries: durableLog})
	if err != nil {
		t.Fatalf("a crash between the driver's two writes leaves a state the core refuses to start from: %v", err)
	}
	if r2.term != 2 || r2.vote != None || !r2.Ready().MustSaveHardState {
		t.Fatalf("restart should adopt the log's term 2 with no vote and persist it: term %d vote %d", r2.term, r2.vote)
	}
}
