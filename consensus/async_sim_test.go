package consensus

import (
	"fmt"
	"strings"
	"testing"
)

// Scenarios for asynchronous persistence (AdvanceAsync/Persisted): a
// node's write stays in flight until the test completes it, while the
// core goes on stepping. Each asserts what the core must do at one edge;
// the safety checker (including checkVouched: every message's term, vote
// and acknowledged entry durable on its sender) runs after every step.

// sentBy returns the messages of type typ node from sent since sc.sent
// was last reset.
func (sc *scenario) sentBy(from NodeID, typ MessageType) []Message {
	var out []Message
	for _, m := range sc.sent {
		if m.From == from && m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// proposeBatch proposes k commands in one Propose on node id (one MsgApp
// per follower) and returns the index of the first.
func (sc *scenario) proposeBatch(id NodeID, k int) Index {
	sc.t.Helper()
	data := make([][]byte, k)
	for i := range data {
		sc.nextCmd++
		data[i] = []byte(fmt.Sprintf("batch-%d", sc.nextCmd))
	}
	first, _, err := sc.r(id).Propose(0, data...)
	if err != nil {
		sc.t.Fatalf("propose on node %d: %v", id, err)
	}
	sc.ready(id)
	return first
}

// TestAsyncLeaderCountsItselfOnlyOncePersisted: a leader whose own write
// is slow commits with its followers' acknowledgements alone, and never
// counts itself toward commit before Persisted reports its write.
// Reference: §10.2.1 (the leader may write its log in parallel with
// replication).
func TestAsyncLeaderCountsItselfOnlyOncePersisted(t *testing.T) {
	sc := newScenario(t, 3, func(o *simOptions) { asyncWrites(o); noCheckQuorum(o) })
	sc.elect(1)
	sc.stabilize()

	// Both followers acknowledge: a majority without the leader.
	sc.held[1] = true
	i := sc.proposeBatch(1, 2) + 1
	sc.stabilize()
	if r := sc.r(1); r.log.stabled >= i || r.log.committed != i {
		t.Fatalf("with its own write in flight the leader should commit %d on its followers' acks: stabled %d, commit %d", i, r.log.stabled, r.log.committed)
	}
	sc.held = map[NodeID]bool{}
	sc.stabilize()
	sc.held[1] = true

	// Only node 2 acknowledges: with the leader's write in flight that is
	// one copy of three, so nothing may commit until Persisted.
	sc.isolate(3)
	j := sc.proposeBatch(1, 1)
	sc.stabilize()
	if w := sc.pendingWrite(1); w.rd.Entries[len(w.rd.Entries)-1].Index != j {
		t.Fatalf("setup: the leader's write in flight is %s, want it to end at %d", describeLog(w.rd.Entries), j)
	}
	if sc.r(1).prs[2].match != j {
		t.Fatalf("setup: node 2 should have acknowledged %d, match %d", j, sc.r(1).prs[2].match)
	}
	if c := sc.r(1).log.committed; c >= j {
		t.Fatalf("the leader committed %d counting its own copy of %d before Persisted (stabled %d)", c, j, sc.r(1).log.stabled)
	}
	sc.complete(1)
	if c := sc.r(1).log.committed; c != j {
		t.Fatalf("after Persisted the leader and node 2 hold %d: commit %d", j, c)
	}
}

// TestAsyncLateWriteOfTruncatedEntriesNotCredited: follower 2's write of
// entries 5..9 (term 1) is in flight when the leader of term 2 replaces
// them from 5. The late Persisted must not mark anything stable that is
// no longer in the log, the next write must start at 5, and the
// acknowledgement to the new leader must wait for that second write.
func TestAsyncLateWriteOfTruncatedEntriesNotCredited(t *testing.T) {
	sc := newScenario(t, 5, func(o *simOptions) { asyncWrites(o); noCheckQuorum(o) })
	sc.elect(1)
	for i := 0; i < 3; i++ {
		sc.propose(1, "a")
	}
	sc.stabilize() // 1..4 of term 1 everywhere, committed
	for _, id := range []NodeID{3, 4, 5} {
		sc.isolate(id)
	}
	sc.held[2] = true
	sc.proposeBatch(1, 5) // 5..9 of term 1, reaching node 2 only
	sc.stabilize()
	if w := sc.pendingWrite(2); describeLog(w.rd.Entries) != "entries 5..9" || w.rd.Entries[0].Term != 1 {
		t.Fatalf("setup: node 2's write in flight is %s", describeLog(w.rd.Entries))
	}
	if sc.r(1).log.committed != 4 {
		t.Fatalf("setup: 5..9 must not commit: commit %d", sc.r(1).log.committed)
	}

	// Node 3 wins term 2 with 4 and 5 (node 2 refuses: its log is
	// longer, but the refusal waits behind its write); its first append
	// reaches node 2, not node 1.
	sc.heal()
	sc.isolate(1)
	sc.sent = nil
	sc.elect(3)
	r2 := sc.r(2)
	if t5, _ := r2.log.term(5); t5 != 2 || r2.term != 2 {
		t.Fatalf("setup: node 2 should hold term 2's entry at 5 in memory: term %d there, node term %d", t5, r2.term)
	}
	if acks := sc.sentBy(2, MsgAppResp); len(acks) > 0 {
		t.Fatalf("node 2 acknowledged %+v while its only write in flight holds term 1's entries", acks)
	}

	sc.complete(2) // the late write of 5..9, term 1
	if r2.log.stabled != 4 {
		t.Fatalf("the late Persisted of 5..9 (term 1) credited entries the log no longer holds: stabled %d, want 4", r2.log.stabled)
	}
	w := sc.pendingWrite(2)
	if len(w.rd.Entries) == 0 || w.rd.Entries[0].Index != 5 || w.rd.Entries[0].Term != 2 {
		t.Fatalf("the next write should rewrite from 5 with term 2: it holds %s", describeLog(w.rd.Entries))
	}
	for _, m := range sc.sentBy(2, MsgAppResp) {
		if m.Term == 2 && !m.Reject {
			t.Fatalf("node 2 acknowledged %d to the leader of term 2 before writing its entries", m.Index)
		}
	}
	sc.complete(2)
	last := r2.log.lastIndex()
	if got := sc.node(2).log; len(got) == 0 || got[len(got)-1].Index != last || r2.log.stabled != last {
		t.Fatalf("after the rewrite node 2's durable log is %s, stabled %d, want through %d", describeLog(got), r2.log.stabled, last)
	}
	if t5, _ := sc.node(2).durableTerm(5); t5 != 2 {
		t.Fatalf("node 2's durable entry 5 is of term %d, want 2", t5)
	}
	sc.held = map[NodeID]bool{}
	sc.heal()
	sc.tick(3)
	sc.stabilize()
	if c := sc.r(3).log.committed; c != last {
		t.Fatalf("the leader of term 2 should commit through %d once node 2 acknowledges: commit %d", last, c)
	}
}

// TestAsyncSnapshotDuringWriteLeavesNoFalseAck: follower 2 has a write of
// entries 5..10 in flight, its acknowledgement of 10 waiting for it, when
// a snapshot at 8 arrives (its commit index is 5, so the snapshot is
// ahead). Installing it discards the log, 9 and 10 included, since they
// are not durable yet; if the acknowledgement of 10 still leaves after the
// write, the leader counts a copy node 2 no longer holds and commits 9
// and 10 with one real copy of three. Found by this test against
// 2b41fd8 (fixed in 69b6bac): "leader 1 (term 2) committed entry 9 (term 2) durable on only
// 1 of its 3 voters". Whatever the core does (refuse the snapshot while
// anything is in flight, or keep the entries the write makes durable),
// no commit may rest on a discarded copy, entries after the snapshot are
// applied only after the install, and node 2 catches up in the end.
func TestAsyncSnapshotDuringWriteLeavesNoFalseAck(t *testing.T) {
	sc := newScenario(t, 3, func(o *simOptions) { asyncWrites(o); noCheckQuorum(o) })
	sc.elect(1)
	for i := 0; i < 3; i++ {
		sc.propose(1, "a")
	}
	sc.stabilize() // 1..4 everywhere, committed
	// Re-elect 1 without 2, so that it probes 2 from its last index.
	sc.isolate(2)
	sc.elect(1) // no-op at 5, committed with 3
	sc.heal()
	sc.isolate(3)
	sc.proposeBatch(1, 5) // 6..10
	sc.complete(1)
	sc.held[2] = true
	// A heartbeat: 2 learns the term (that write completes), answers, and
	// the leader probes it from 5; the write of 5..10 stays in flight.
	sc.tick(1, 1)
	for i := 0; i < 10; i++ {
		if w := sc.node(2).pending; w != nil && len(w.rd.Entries) == 0 {
			sc.complete(2)
		}
		sc.stabilize()
	}
	w := sc.pendingWrite(2)
	if describeLog(w.rd.Entries) != "entries 5..10" || sc.r(2).log.committed >= 8 {
		t.Fatalf("setup: node 2's write in flight %s, commit %d", describeLog(w.rd.Entries), sc.r(2).log.committed)
	}
	// Node 3 gets entries through 8 only: the leader commits 8.
	sc.isolate(2)
	sc.joinLink(1, 3)
	sc.edit = func(m *Message) {
		if m.To == 3 && m.Type == MsgApp {
			for len(m.Entries) > 0 && m.Entries[len(m.Entries)-1].Index > 8 {
				m.Entries = m.Entries[:len(m.Entries)-1]
			}
		}
	}
	sc.drop = func(m Message) bool {
		return m.To == 3 && m.Type == MsgApp && m.PrevIndex >= 8 && len(m.Entries) > 0
	}
	sc.tick(3, 1)
	sc.stabilize()
	sc.drop, sc.edit = nil, nil
	if c := sc.r(1).log.committed; c != 8 {
		t.Fatalf("setup: leader commit %d, want 8", c)
	}
	if err := sc.takeSnapshot(sc.node(1)); err != nil {
		t.Fatal(err)
	}
	if sc.r(1).log.snapIndex != 8 {
		t.Fatalf("setup: leader's log base %d, want 8", sc.r(1).log.snapIndex)
	}
	// Back to 2 only: its heartbeat answer makes the leader send the
	// snapshot, which arrives while the write is still in flight.
	sc.isolate(3)
	sc.joinLink(1, 2)
	sc.r(1).Tick()
	sc.ready(1)
	sc.deliverMessages()
	if len(sc.snaps) != 1 || sc.snaps[0].to != 2 {
		t.Fatalf("setup: want one snapshot on its way to 2, have %+v", sc.snaps)
	}
	sn := sc.snaps[0]
	sc.snaps = nil
	if ok, err := sc.receiveSnapshot(sn); err != nil || !ok {
		t.Fatalf("snapshot transfer: arrived %v, %v", ok, err)
	}
	sc.complete(2) // the write of 5..10 lands; its acknowledgement leaves
	sc.deliverMessages()
	if err := sc.reportSnapshot(sn, true); err != nil {
		t.Fatal(err)
	}
	sc.held = map[NodeID]bool{}
	sc.stabilize()
	sc.heal()
	sc.tick(3)
	sc.stabilize()
	k := entryKey{10, sc.r(1).term}
	for _, id := range []NodeID{1, 2, 3} {
		if !sc.hasApplied(sc.node(id), k) {
			t.Fatalf("node %d has not applied %v after healing: applied %d", id, k, sc.r(id).log.applied)
		}
	}
}

// TestAsyncSnapshotAfterUnwrittenAppendLeavesNoFalseAck: the same hazard
// without a write in flight: a follower steps an append (its
// acknowledgement waits for the next Ready's write) and is offered a
// snapshot before that Ready. Installing it must not let the
// acknowledgement vouch for discarded entries.
func TestAsyncSnapshotAfterUnwrittenAppendLeavesNoFalseAck(t *testing.T) {
	sc := newScenario(t, 3, noCheckQuorum)
	sc.elect(1)
	for i := 0; i < 3; i++ {
		sc.propose(1, "a")
	}
	sc.deliver() // 1..4 everywhere, committed
	sc.isolate(2)
	sc.proposeBatch(1, 4) // 5..8, committed with node 3
	sc.deliver()
	if err := sc.takeSnapshot(sc.node(1)); err != nil || sc.r(1).log.snapIndex != 8 {
		t.Fatalf("setup: snapshot: %v, log base %d", err, sc.r(1).log.snapIndex)
	}
	sc.isolate(3)
	sc.joinLink(1, 2)
	sc.proposeBatch(1, 2) // 9..10: now only node 2 can acknowledge them
	sc.net = nil          // its append would be refused: node 2 lacks 5..8
	// The append of 5..10 a leader without compaction would send; node
	// 2 steps it, and before the Ready that writes it, the snapshot at 8
	// arrives.
	r1 := sc.r(1)
	var ents []Entry
	for _, e := range sc.node(3).log {
		if e.Index >= 5 && e.Index <= 8 {
			ents = append(ents, e)
		}
	}
	ents = append(ents, r1.log.slice(9, 11)...)
	if err := sc.r(2).Step(Message{Type: MsgApp, From: 1, To: 2, Term: r1.term, PrevIndex: 4, PrevTerm: 1, Entries: ents, Commit: 4}); err != nil {
		t.Fatal(err)
	}
	n1 := sc.node(1)
	sn := simSnap{from: 1, to: 2, incarnation: n1.incarnation, meta: n1.snap, conf: n1.snapConf.Clone()}
	if _, err := sc.receiveSnapshot(sn); err != nil {
		t.Fatalf("safety violation: %v", err)
	}
	sc.deliver()
	sc.heal()
	sc.tick(3)
	for _, id := range []NodeID{1, 2, 3} {
		if k := (entryKey{10, r1.term}); !sc.hasApplied(sc.node(id), k) {
			t.Fatalf("node %d has not applied %v after healing: applied %d", id, k, sc.r(id).log.applied)
		}
	}
}

// TestAsyncVoteLeavesOnlyAfterItsWrite: a vote granted while a write of
// entries is in flight is answered only after a later write that holds
// the vote.
func TestAsyncVoteLeavesOnlyAfterItsWrite(t *testing.T) {
	sc := newScenario(t, 3, func(o *simOptions) { asyncWrites(o); noCheckQuorum(o) })
	sc.elect(1)
	sc.stabilize()
	sc.held[2] = true
	sc.proposeBatch(1, 2)
	sc.stabilize() // node 3 holds the entries too, node 2 is writing them
	sc.pendingWrite(2)
	sc.sent = nil
	sc.r(3).campaign(false, false)
	sc.ready(3)
	sc.complete(3) // node 3's term and vote are durable; it asks 1 and 2
	sc.cutLink(1, 3)
	sc.deliver()
	n2 := sc.node(2)
	if n2.raft.vote != 3 {
		t.Fatalf("setup: node 2 should grant its vote to 3 in memory: vote %d term %d", n2.raft.vote, n2.raft.term)
	}
	if v := sc.sentBy(2, MsgVoteResp); len(v) > 0 {
		t.Fatalf("node 2 answered the vote %+v with a write of entries in flight and the vote not durable", v)
	}
	sc.complete(2) // the entries; the next write holds the vote
	if v := sc.sentBy(2, MsgVoteResp); len(v) > 0 {
		t.Fatalf("node 2 answered the vote %+v after a write that did not hold it (durable %+v)", v, n2.hard)
	}
	w := sc.pendingWrite(2)
	if w.hs == nil || w.hs.Vote != 3 || w.hs.Term != sc.r(3).term {
		t.Fatalf("node 2's next write should hold its vote for 3 in term %d: %+v", sc.r(3).term, w.hs)
	}
	sc.complete(2)
	v := sc.sentBy(2, MsgVoteResp)
	if len(v) != 1 || v[0].Reject || n2.hard.Vote != 3 {
		t.Fatalf("after the write of the vote node 2 should answer it: %+v (durable %+v)", v, n2.hard)
	}
	sc.held = map[NodeID]bool{}
	sc.stabilize()
	if sc.r(3).role != Leader {
		t.Fatalf("node 3 should win with node 2's vote: %s", sc.r(3).role)
	}
}

// TestAsyncCampaignWaitsForItsTermToBeDurable: a node that campaigns
// with a write in flight sends its vote requests only once its new term
// and its vote for itself are durable.
func TestAsyncCampaignWaitsForItsTermToBeDurable(t *testing.T) {
	sc := followerWriting(t, 2)
	term := sc.r(2).term + 1
	sc.sent = nil
	sc.r(2).campaign(false, false)
	sc.ready(2)
	if v := sc.sentBy(2, MsgVote); len(v) > 0 {
		t.Fatalf("node 2 asked for votes %+v with its term %d not durable (durable %+v)", v, term, sc.node(2).hard)
	}
	sc.complete(2) // the entries
	if v := sc.sentBy(2, MsgVote); len(v) > 0 {
		t.Fatalf("node 2 asked for votes %+v after a write without its new term (durable %+v)", v, sc.node(2).hard)
	}
	if w := sc.pendingWrite(2); w.hs == nil || w.hs.Term != term || w.hs.Vote != 2 {
		t.Fatalf("node 2's next write should hold term %d and its own vote: %+v", term, w.hs)
	}
	sc.complete(2)
	if v := sc.sentBy(2, MsgVote); len(v) != 2 {
		t.Fatalf("node 2 should ask both others once its term is durable: %+v", v)
	}
	sc.held = map[NodeID]bool{}
	sc.stabilize()
	if sc.r(2).role != Leader || sc.r(2).term != term {
		t.Fatalf("node 2 should win term %d: %s in term %d", term, sc.r(2).role, sc.r(2).term)
	}
}

// TestAsyncHeartbeatAnswerLeavesOnlyWithDurableTerm: a follower answers a
// heartbeat at once, even with a write of entries in flight, when its
// term is durable (the leader's reads and CheckQuorum need not wait for
// its disk); a heartbeat that brings it a new term is answered only after
// the write that holds the term.
func TestAsyncHeartbeatAnswerLeavesOnlyWithDurableTerm(t *testing.T) {
	sc := followerWriting(t, 3)
	sc.sent = nil
	sc.r(1).Tick()
	sc.ready(1)
	sc.deliverMessages()
	if len(sc.sentBy(2, MsgHeartbeatResp)) != 1 {
		t.Fatalf("node 2, its term durable, should answer the heartbeat while its write is in flight: %+v", sc.net)
	}
	sc.held = map[NodeID]bool{}
	sc.stabilize()

	// Node 3 writes entries of term 1 when the first heartbeat of term 2
	// reaches it: the answer vouches for term 2 and waits for its write.
	sc.held[3] = true
	sc.proposeBatch(1, 2)
	sc.stabilize()
	sc.pendingWrite(3)
	sc.isolate(3)
	sc.elect(2)
	sc.stabilize()
	sc.heal()
	sc.sent = nil
	sc.r(2).Tick()
	sc.ready(2)
	sc.deliverMessages()
	if sc.r(3).term != sc.r(2).term {
		t.Fatalf("setup: node 3 should have learned term %d: %d", sc.r(2).term, sc.r(3).term)
	}
	if hb := sc.sentBy(3, MsgHeartbeatResp); len(hb) > 0 {
		t.Fatalf("node 3 answered a heartbeat of term %d with only term %d durable: %+v", sc.r(3).term, sc.node(3).hard.Term, hb)
	}
	sc.complete(3) // the entries of term 1
	if hb := sc.sentBy(3, MsgHeartbeatResp); len(hb) > 0 {
		t.Fatalf("node 3 answered a heartbeat of term %d after a write without that term: %+v", sc.r(3).term, hb)
	}
	sc.complete(3) // the term
	if hb := sc.sentBy(3, MsgHeartbeatResp); len(hb) == 0 || sc.node(3).hard.Term != sc.r(3).term {
		t.Fatalf("node 3 should answer once term %d is durable (durable %+v)", sc.r(3).term, sc.node(3).hard)
	}
	sc.held = map[NodeID]bool{}
	sc.stabilize()
}

// TestAsyncSimulationCatchesBrokenCore: every deliberately broken rule of
// TestSimulationCatchesBrokenCore is still caught with every seed
// persisting asynchronously (LOCKD_SIM_SEEDS bounds the search).
func TestAsyncSimulationCatchesBrokenCore(t *testing.T) {
	for _, c := range brokenRules {
		t.Run(c.name, func(t *testing.T) {
			seed, msg := firstFailingSeed(func(seed int64) simOptions {
				o := optionsForSeed(seed, c.rule)
				o.async = true
				return o
			})
			if seed < 0 {
				t.Fatalf("the asynchronous simulation did not catch the broken rule in %d seeds", envInt("LOCKD_SIM_SEEDS", 2000))
			}
			t.Logf("caught at seed %d: %s", seed, msg)
		})
	}
}

// TestAsyncSimulationCatchesEarlyReplies: a driver that sends a Ready's
// MessagesAfterPersist when it starts the write, not once it is durable,
// is caught by checkVouched (a vote or an acknowledgement that the
// sender's disk does not hold yet).
func TestAsyncSimulationCatchesEarlyReplies(t *testing.T) {
	seed, msg := firstFailingSeed(func(seed int64) simOptions {
		o := optionsForSeed(seed, ruleIntact)
		o.async, o.earlyReplies = true, true
		return o
	})
	if seed < 0 {
		t.Fatalf("the simulation did not catch replies sent before their write in %d seeds", envInt("LOCKD_SIM_SEEDS", 2000))
	}
	if !strings.Contains(msg, "durable") {
		t.Fatalf("seed %d failed, but not for a reply ahead of its write: %s", seed, msg)
	}
	t.Logf("caught at seed %d: %s", seed, msg)
}

// firstFailingSeed runs seeds from 1 up to LOCKD_SIM_SEEDS with the
// options opts gives and returns the first that fails, with the first
// line of its error; -1 if none does.
func firstFailingSeed(opts func(int64) simOptions) (int64, string) {
	seeds := envInt("LOCKD_SIM_SEEDS", 2000)
	for seed := int64(1); seed <= seeds; seed++ {
		if _, err := runSeedWith(seed, opts(seed)); err != nil {
			return seed, strings.SplitN(err.Error(), "\n", 2)[0]
		}
	}
	return -1, ""
}

// followerWriting: node 1 leads 3 nodes (asynchronous writes, no
// CheckQuorum) and has just replicated k new entries; node 2's write of
// them is held in flight.
func followerWriting(t *testing.T, k int) *scenario {
	t.Helper()
	sc := newScenario(t, 3, func(o *simOptions) { asyncWrites(o); noCheckQuorum(o) })
	sc.elect(1)
	sc.stabilize()
	sc.held[2] = true
	sc.proposeBatch(1, k)
	sc.stabilize()
	sc.pendingWrite(2)
	return sc
}
