package consensus

import (
	"errors"
	"strings"
	"testing"
)

func noCheckQuorum(o *simOptions) {
	o.configure = func(c *Config) { c.DisableCheckQuorum = true }
}

// figure8 plays the paper's Figure 8 (c)–(e) on five nodes and returns
// the scenario and S1's commit index while it led term 4.
//
// S1 and S2 hold entry 2 of term 2; S5 holds entry 2 of term 3. S1 leads
// term 4 and copies 2:2 to S3 and S4 — a majority holds it — but its own
// no-op of term 4 reaches nobody. Then S1 dies and S5, whose last term 3
// beats 2, wins term 5 and overwrites index 2 everywhere.
func figure8(t *testing.T, rule brokenRule) (*scenario, Index) {
	sc := newScenario(t, 5, func(o *simOptions) {
		o.maxEntries = 1
		o.breakRule = rule
		noCheckQuorum(o) // so S5 can win while the others still know S1
	})
	sc.expectViolation = rule != ruleIntact
	sc.restore(1, HardState{Term: 3}, 1, 2)
	sc.restore(2, HardState{Term: 3}, 1, 2)
	sc.restore(3, HardState{Term: 3}, 1)
	sc.restore(4, HardState{Term: 3}, 1)
	sc.restore(5, HardState{Term: 3}, 1, 3)
	// The no-op (index 3) reaches nobody who could take it.
	sc.drop = func(m Message) bool {
		n := len(m.Entries)
		return m.Type == MsgApp && n > 0 && m.Entries[n-1].Index >= 3 && sc.r(m.To).log.lastIndex() >= 2
	}
	sc.isolate(5)
	sc.elect(1)
	commitInTerm4 := sc.r(1).log.committed
	sc.crash(1)
	sc.heal()
	sc.isolate(1)
	sc.drop = nil
	for sc.r(5).role != Leader && sc.r(5).term < 10 {
		sc.r(5).campaign(false, false)
		sc.ready(5)
		sc.deliver()
	}
	sc.tick(3)
	return sc, commitInTerm4
}

// Reference: §5.4.2, Figure 8.
func TestCannotCommitPreviousTermEntryByCounting(t *testing.T) {
	sc, commit := figure8(t, ruleIntact)
	if commit >= 2 {
		t.Fatalf("S1 committed index %d of an earlier term by counting replicas; want commit < 2", commit)
	}
	if sc.r(5).role != Leader {
		t.Fatalf("S5 should lead term 5, is %s in term %d", sc.r(5).role, sc.r(5).term)
	}
	for _, id := range []NodeID{2, 3, 4, 5} {
		if got, _ := sc.r(id).log.term(2); got != 3 {
			t.Errorf("node %d has term %d at index 2, want S5's term 3", id, got)
		}
	}

	// The same story with the rule broken must be caught.
	sc, commit = figure8(t, breakCurrentTermCommit)
	if commit < 2 {
		t.Fatalf("with the broken rule S1 should commit index 2 by counting, commit is %d", commit)
	}
	if sc.violation == nil || !strings.Contains(sc.violation.Error(), "leader completeness") {
		t.Fatalf("broken rule not caught: violation %v", sc.violation)
	}
}

// Seed 002 mistake 1: two leaders never share a term; the deposed leader
// has an older term and steps down at the first message of a newer one,
// whatever the commit indexes.
func TestDeposedLeaderStepsDownOnHigherTermNotCommitIndex(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.propose(1, "a")
	sc.deliver()
	sc.isolate(1)
	sc.propose(1, "x") // never committed: S1 is cut off
	sc.tick(40, 2, 3)
	newLead := sc.r(2).lead
	if newLead == None || newLead == 1 || sc.r(newLead).role != Leader {
		t.Fatalf("no new leader among 2 and 3: lead %d", newLead)
	}
	newTerm := sc.r(newLead).term
	if sc.r(1).role != Leader || sc.r(1).term >= newTerm {
		t.Fatalf("S1 should still believe it leads an older term: %s term %d, new term %d", sc.r(1).role, sc.r(1).term, newTerm)
	}
	sc.heal()
	sc.tick(3)
	if sc.r(1).role != Follower || sc.r(1).term != newTerm || sc.r(1).lead != newLead {
		t.Fatalf("old leader: %s term %d lead %d; want follower of %d in term %d", sc.r(1).role, sc.r(1).term, sc.r(1).lead, newLead, newTerm)
	}
	if sc.r(newLead).role != Leader || sc.r(newLead).term != newTerm {
		t.Fatalf("the new leader was deposed by the old one: %s term %d", sc.r(newLead).role, sc.r(newLead).term)
	}
	if t1, _ := sc.r(1).log.term(3); t1 != newTerm {
		t.Fatalf("S1's uncommitted entry 3 should be replaced by the new leader's (term %d), has term %d", newTerm, t1)
	}
}

// Seed 002 mistake 2: a follower's commit index is capped at the last entry
// the AppendEntries verified, not its log's end, which may hold stale
// entries of an older term.
func TestFollowerCommitCappedAtLastVerifiedEntry(t *testing.T) {
	run := func(rule brokenRule) Index {
		var ents []Entry
		for i := 1; i <= 3; i++ {
			e := Entry{Index: Index(i), Term: 1, Data: []byte{byte(i)}}
			e.Seal()
			ents = append(ents, e)
		}
		r, err := New(Config{ID: 3, Voters: []NodeID{1, 2, 3}, breakRule: rule}, Restored{HardState: HardState{Term: 1}, Entries: ents})
		if err != nil {
			t.Fatal(err)
		}
		// The leader of term 2 has 2:1 but not our 3:1 (it has 3:2).
		// Its message verifies up to index 2 and says commit 3.
		err = r.Step(Message{Type: MsgApp, From: 1, To: 3, Term: 2, PrevIndex: 1, PrevTerm: 1, Entries: ents[1:2], Commit: 3})
		if err != nil {
			t.Fatal(err)
		}
		return r.log.committed
	}
	if got := run(ruleIntact); got != 2 {
		t.Fatalf("follower commit = %d, want 2 (the last verified entry); stale entry 3:1 must not commit", got)
	}
	if got := run(breakFollowerCommit); got != 3 {
		t.Fatalf("with the broken rule the stale entry should commit (proving this test can fail); commit = %d", got)
	}
}

// Seed 002 mistake 3 / §8: a new leader appends a no-op entry of its term at
// once; entries of earlier terms commit with it, with no client write.
func TestNewLeaderCommitsOldEntriesThroughNoop(t *testing.T) {
	sc := newScenario(t, 3, noCheckQuorum)
	sc.elect(1)
	sc.drop = func(m Message) bool { return m.Type == MsgApp && len(m.Entries) > 0 }
	idx := sc.propose(1, "a")
	sc.deliver()
	if c := sc.r(1).log.committed; c >= idx {
		t.Fatalf("entry %d committed without replication: commit %d", idx, c)
	}
	sc.drop = nil
	sc.crash(1)
	sc.restart(1)
	sc.elect(1) // S1's log is the longest: it wins term 2
	r := sc.r(1)
	last := r.log.entries[len(r.log.entries)-1]
	if last.Type != EntryNoop || last.Term != r.term || last.Index != idx+1 {
		t.Fatalf("new leader's last entry is %s %d:%d, want a no-op of term %d at %d", last.Type, last.Index, last.Term, r.term, idx+1)
	}
	sc.tick(2)
	for _, id := range sc.ids {
		if c := sc.r(id).log.committed; c < idx+1 {
			t.Errorf("node %d commit %d: the old-term entry %d should commit with the no-op", id, c, idx)
		}
	}
	if len(sc.check.applied) < int(idx) {
		t.Fatalf("entry %d was never applied", idx)
	}
}

// Seed 002 mistake 4: pipelining moves next ahead, but match moves only on
// a successful answer; when the pipeline's appends are lost, the leader
// falls back to probing and still converges.
func TestPipelinedAppendsMoveMatchOnlyOnAck(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.propose(1, "warm")
	sc.deliver()
	pr := sc.r(1).prs[2]
	if pr.state != replicating {
		t.Fatalf("follower 2 should be replicating, is %s", pr.state)
	}
	match0 := pr.match
	sc.drop = func(m Message) bool { return m.To == 2 && m.Type == MsgApp }
	for i := 0; i < 4; i++ {
		sc.propose(1, "p")
	}
	sc.deliver()
	if pr.match != match0 {
		t.Fatalf("match moved from %d to %d without an acknowledgement", match0, pr.match)
	}
	if pr.next != sc.r(1).log.lastIndex()+1 || len(pr.inflight) == 0 {
		t.Fatalf("pipelining should have advanced next to %d with appends in flight: next %d, inflight %d", sc.r(1).log.lastIndex()+1, pr.next, len(pr.inflight))
	}
	sc.drop = nil
	sc.tick(3)
	if pr.match != sc.r(1).log.lastIndex() {
		t.Fatalf("follower 2 did not catch up after the lost pipeline: match %d, last %d", pr.match, sc.r(1).log.lastIndex())
	}
}

// Reference: dissertation §9.6. A node cut off from the cluster keeps
// pre-voting without raising its term, so when it returns the leader
// stays. Without pre-vote the same story deposes the leader.
func TestPreVoteRejoiningNodeDoesNotDisruptLeader(t *testing.T) {
	run := func(disablePreVote bool) (*scenario, Term) {
		sc := newScenario(t, 3, func(o *simOptions) {
			o.configure = func(c *Config) { c.DisablePreVote = disablePreVote }
		})
		sc.elect(1)
		term := sc.r(1).term
		sc.isolate(3)
		sc.tick(60, 3)
		sc.heal()
		sc.tick(3)
		return sc, term
	}
	sc, term := run(false)
	if got := sc.r(3).term; got != term {
		t.Errorf("isolated node raised its term to %d (was %d)", got, term)
	}
	if sc.r(1).role != Leader || sc.r(1).term != term {
		t.Fatalf("leader disrupted by the returning node: %s term %d", sc.r(1).role, sc.r(1).term)
	}

	sc, term = run(true)
	if sc.r(1).role == Leader && sc.r(1).term == term {
		t.Fatalf("without pre-vote the returning node should have deposed the leader (proving this test can fail)")
	}
}

// Reference: dissertation §6.2. A leader that hears from no majority for an
// election timeout steps down.
func TestCheckQuorumIsolatedLeaderStepsDown(t *testing.T) {
	for _, disabled := range []bool{false, true} {
		sc := newScenario(t, 3, func(o *simOptions) {
			o.configure = func(c *Config) { c.DisableCheckQuorum = disabled }
		})
		sc.elect(1)
		sc.isolate(1)
		sc.tick(sc.opts.electionTicks, 1)
		stillLeader := sc.r(1).role == Leader
		if !disabled && stillLeader {
			t.Fatalf("isolated leader still leads after an election timeout")
		}
		if disabled && !stillLeader {
			t.Fatalf("without CheckQuorum the isolated leader should stay (proving the test can fail)")
		}
	}
}

// Reference: §5.2, dissertation §3.8. A vote is durable before the answer
// leaves; a node that crashed after persisting its vote but before
// replying still refuses a second candidate in that term.
func TestCrashBetweenPersistingVoteAndReplying(t *testing.T) {
	sc := newScenario(t, 3, nil)
	r2 := sc.r(2)
	r2.campaign(false, false)
	sc.ready(2)
	term := r2.term
	// Hand S3 only S2's request, and play S3's driver by hand.
	var req Message
	for _, sm := range sc.net {
		if sm.m.To == 3 {
			req = sm.m
		}
	}
	sc.net = nil
	if err := sc.r(3).Step(req); err != nil {
		t.Fatal(err)
	}
	rd := sc.r(3).Ready()
	for _, m := range rd.Messages {
		if m.Type == MsgVoteResp {
			t.Fatalf("vote answer %+v may leave before the vote is durable", m)
		}
	}
	granted := false
	for _, m := range rd.MessagesAfterPersist {
		granted = granted || (m.Type == MsgVoteResp && !m.Reject)
	}
	if !granted || !rd.MustSaveHardState || rd.HardState.Vote != 2 {
		t.Fatalf("S3 should grant S2 with the vote in the hard state: granted %v, hard state %+v", granted, rd.HardState)
	}
	sc.node(3).hard = rd.HardState // persisted...
	sc.crash(3)                    // ...and dead before replying
	sc.restart(3)

	r1 := sc.r(1)
	r1.campaign(false, false)
	sc.ready(1)
	if r1.term != term {
		t.Fatalf("S1 should campaign in the same term %d, is in %d", term, r1.term)
	}
	sc.deliver()
	if r1.role == Leader {
		t.Fatalf("S1 won term %d although S3 had durably voted for S2", term)
	}
	if v := sc.r(3).vote; v != 2 {
		t.Fatalf("S3's vote after restart is %d, want 2", v)
	}
}

// Reference: dissertation §6.4. A leader cut off from the majority must not
// answer a read index while a newer leader commits writes.
func TestReadIndexNoStaleReadFromDeposedLeader(t *testing.T) {
	sc := newScenario(t, 3, noCheckQuorum)
	sc.elect(1)
	sc.propose(1, "a")
	sc.deliver()
	sc.isolate(1)
	for sc.r(2).role != Leader {
		sc.r(2).campaign(false, false)
		sc.ready(2)
		sc.deliver()
	}
	b := sc.propose(2, "b")
	sc.deliver()
	if sc.r(2).log.committed < b {
		t.Fatalf("new leader did not commit %d", b)
	}
	sc.readIndex(1, 7)
	sc.tick(5, 1)
	if rs, ok := sc.readResults[7]; ok && !rs.Dropped {
		t.Fatalf("deposed leader served read index %d; the newer leader committed %d", rs.Index, b)
	}
	sc.heal()
	sc.tick(2)
	rs, ok := sc.readResults[7]
	if !ok || !rs.Dropped {
		t.Fatalf("the read should be dropped once the old leader learns the new term: %+v %v", rs, ok)
	}

	// A read at the new leader, and one through a follower, cover b.
	sc.readIndex(2, 8)
	sc.readIndex(3, 9)
	sc.tick(2)
	for _, id := range []uint64{8, 9} {
		if rs := sc.readResults[id]; rs.Dropped || rs.Index < b {
			t.Fatalf("read %d: %+v, want index ≥ %d", id, rs, b)
		}
	}
}

// Reference: dissertation §3.10. The leader brings a lagging target up to
// date, refusing proposals meanwhile, then the target wins at once.
func TestLeadershipTransferToLaggingFollower(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.drop = func(m Message) bool { return m.To == 3 && m.Type == MsgApp }
	for i := 0; i < 5; i++ {
		sc.propose(1, "w")
	}
	sc.deliver()
	sc.drop = nil
	last := sc.r(1).log.lastIndex()
	if err := sc.r(1).TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sc.r(1).Propose(0, []byte("x")); !errors.Is(err, ErrTransferInProgress) {
		t.Fatalf("proposal during transfer: %v, want ErrTransferInProgress", err)
	}
	sc.ready(1)
	sc.deliver()
	sc.tick(3)
	r3 := sc.r(3)
	if r3.role != Leader {
		t.Fatalf("transfer target is %s in term %d", r3.role, r3.term)
	}
	if r3.log.committed <= last {
		t.Fatalf("new leader commit %d should pass the old last index %d", r3.log.committed, last)
	}
}

// Reference: §5.3 (the optimization at the end). Back-tracking by
// conflicting term skips whole terms instead of one entry per round trip.
func TestFastBacktrackingByConflictTerm(t *testing.T) {
	sc := newScenario(t, 3, noCheckQuorum)
	leaderLog := []Term{1, 1, 1, 4, 4, 4, 4}
	sc.restore(1, HardState{Term: 5}, leaderLog...)
	sc.restore(3, HardState{Term: 5}, leaderLog...)
	sc.restore(2, HardState{Term: 3}, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3)
	rejections := 0
	sc.drop = func(m Message) bool {
		if m.Type == MsgAppResp && m.From == 2 && m.Reject {
			rejections++
		}
		return false
	}
	sc.elect(1)
	sc.tick(2)
	if rejections > 3 {
		t.Fatalf("%d refusals to find the match point; by term it takes at most 3", rejections)
	}
	if got, want := sc.r(2).log.lastIndex(), sc.r(1).log.lastIndex(); got != want {
		t.Fatalf("follower last index %d, leader %d", got, want)
	}
}
