package consensus

import (
	"errors"
	"testing"
)

// cutBoth cuts the links between a and b in both directions.
func (sc *scenario) cutBoth(a, b NodeID) {
	sc.cut[[2]NodeID{a, b}], sc.cut[[2]NodeID{b, a}] = true, true
}

// confChange proposes cc on leader id and runs its Ready.
func (sc *scenario) confChange(id NodeID, cc ConfChange) (Index, ConfChange, Configuration, error) {
	sc.t.Helper()
	idx, _, done, next, err := sc.r(id).ProposeConfChange(0, cc)
	if err == nil && done.Type == ConfAddLearner && sc.node(done.ID) == nil {
		sc.addMachine(done.ID, next)
	}
	sc.ready(id)
	return idx, done, next, err
}

// TestConfChangeWaitsForCommitInTerm is the bug Ongaro reported in the
// single-server change algorithm (raft-dev, 2015; dissertation errata):
// a new leader that changes the configuration before committing an entry
// of its term can have a committed entry overwritten by a leader elected
// under a configuration from an earlier term. Reference: §4.1.
//
// Voters {1,2,3,4}, learner 5. Leader 1 (term 1) promotes 5 but reaches
// only 5, then crashes. Node 2 wins term 2 with 3 and 4, appends its
// no-op (reaching only 3) and at once removes 4: with the broken rule the
// removal commits on {2,3}, a majority of {1,2,3}. Node 1 returns and,
// with its configuration {1,2,3,4,5}, wins term 3 with 4 and 5, whose
// logs are no newer than its own, and does not hold the committed
// entries. With the rule, node 2 refuses the change until its no-op
// commits.
func TestConfChangeWaitsForCommitInTerm(t *testing.T) {
	for _, broken := range []bool{false, true} {
		name := "intact"
		if broken {
			name = "broken"
		}
		t.Run(name, func(t *testing.T) {
			sc := newScenario(t, 4, func(o *simOptions) {
				if broken {
					o.breakRule = breakConfTermCommit
				}
			})
			sc.expectViolation = broken
			sc.elect(1)
			if _, done, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner}); err != nil || done.ID != 5 {
				t.Fatalf("adding a learner: id %d, %v", done.ID, err)
			}
			sc.deliver()
			sc.tick(2)
			for _, o := range []NodeID{2, 3, 4} {
				sc.cutBoth(1, o)
			}
			k, _, _, err := sc.confChange(1, ConfChange{Type: ConfPromote, ID: 5})
			if err != nil {
				t.Fatalf("promoting 5: %v", err)
			}
			sc.deliver()
			if t5, _ := sc.r(5).log.term(k); t5 != 1 {
				t.Fatalf("setup: node 5 lacks the promotion at %d", k)
			}
			sc.crash(1)

			// Node 2's appends reach node 3 only. (3 and 4 restart so that
			// no leader lease holds their votes back.)
			sc.drop = func(m Message) bool {
				return m.From == 2 && (m.To == 4 || m.To == 5) && (m.Type == MsgApp || m.Type == MsgHeartbeat)
			}
			for _, id := range []NodeID{3, 4} {
				sc.crash(id)
				sc.restart(id)
			}
			sc.elect(2)
			_, _, _, err = sc.confChange(2, ConfChange{Type: ConfRemove, ID: 4})
			if !broken {
				if !errors.Is(err, ErrConfChangeTooEarly) {
					t.Fatalf("a new leader changed membership before committing in its term: %v", err)
				}
			} else if err != nil {
				t.Fatalf("with the broken rule the change should go through: %v", err)
			}
			sc.deliver()
			if broken && sc.r(2).log.committed < k+1 {
				t.Fatalf("setup: the removal at %d did not commit (commit %d)", k+1, sc.r(2).log.committed)
			}

			// Node 1 returns, cut off from 2 and 3; 4 and 5 restart (so no
			// leader lease holds their votes back).
			for _, id := range []NodeID{4, 5} {
				sc.crash(id)
				sc.restart(id)
			}
			sc.restart(1)
			delete(sc.cut, [2]NodeID{1, 4})
			delete(sc.cut, [2]NodeID{4, 1})
			for i := 0; i < 2 && sc.r(1).role != Leader; i++ {
				sc.r(1).campaign(false, false)
				sc.ready(1)
				sc.deliver()
			}
			if broken {
				if sc.violation == nil {
					for _, n := range sc.nodes {
						r := n.raft
						t.Logf("node %d: %s term %d vote %d last %d/%d commit %d conf %v", n.id, r.role, r.term, r.vote, r.log.lastIndex(), r.log.lastTerm(), r.log.committed, r.Configuration())
					}
					t.Fatal("the broken rule let node 1 overwrite committed entries, but the checker saw nothing")
				}
				t.Logf("caught: %v", sc.violation)
			}
		})
	}
}

// TestConfChangeOneAtATime: a second change while the first is not
// committed is refused; once it commits, the next is taken. Reference: §4.1.
func TestConfChangeOneAtATime(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.cutBoth(1, 2)
	sc.cutBoth(1, 3)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner}); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner})
	if !errors.Is(err, ErrConfChangeInProgress) {
		t.Fatalf("second change while the first is uncommitted: %v", err)
	}
	sc.heal()
	sc.tick(2)
	if _, done, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner}); err != nil || done.ID != 5 {
		t.Fatalf("change after the first committed: id %d, %v", done.ID, err)
	}
}

// TestRemoveLastVoterRefused: the cluster never goes without a voter.
func TestRemoveLastVoterRefused(t *testing.T) {
	sc := newScenario(t, 1, nil)
	sc.elect(1)
	sc.tick(1)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfRemove, ID: 1}); !errors.Is(err, ErrRemoveLastVoter) {
		t.Fatalf("removing the only voter: %v", err)
	}
}

// TestConfChangeThatLosesQuorumRefused: with node 3 silent for an election
// timeout, removing node 2 would leave {1,3} of which only the leader
// answers; promoting a learner that does not answer is refused alike.
func TestConfChangeThatLosesQuorumRefused(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner}); err != nil {
		t.Fatal(err)
	}
	sc.tick(2)
	sc.isolate(3)
	sc.isolate(4)
	sc.tick(sc.opts.electionTicks, 1, 2)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfRemove, ID: 2}); !errors.Is(err, ErrQuorumLoss) {
		t.Fatalf("removing 2 while 3 is silent: %v", err)
	}
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfPromote, ID: 4}); err != nil {
		// {1,2,3,4}: 1 and 2 answer, quorum 3.
		if !errors.Is(err, ErrQuorumLoss) {
			t.Fatalf("promoting a silent learner: %v", err)
		}
	} else {
		t.Fatal("promoting a silent learner while another voter is silent was accepted")
	}
	// Removing the silent voter itself keeps a quorum: {1,2}.
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfRemove, ID: 3}); err != nil {
		t.Fatalf("removing the silent voter: %v", err)
	}
}

// TestLearnerNeverVotesOrCountsForCommit: a learner's acknowledgement
// does not commit, and a learner cut off from the leader never campaigns.
func TestLearnerNeverVotesOrCountsForCommit(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner}); err != nil {
		t.Fatal(err)
	}
	sc.tick(2)
	sc.cutBoth(1, 2)
	sc.cutBoth(1, 3)
	idx := sc.propose(1, "only-the-learner-acks")
	sc.deliver()
	if got := sc.r(4).log.lastIndex(); got < idx {
		t.Fatalf("setup: the learner has %d, want %d", got, idx)
	}
	if c := sc.r(1).log.committed; c >= idx {
		t.Fatalf("entry %d committed (commit %d) with only the leader and a learner", idx, c)
	}
	sc.heal()
	sc.isolate(4)
	term := sc.r(4).term
	sc.tick(5*sc.opts.electionTicks, 4)
	if r := sc.r(4); r.role != Follower || r.term != term {
		t.Fatalf("an isolated learner campaigned: %s in term %d (was %d)", r.role, r.term, term)
	}
}

// TestLeaderRemovesItselfThenHandsOver: the leader goes on leading
// (without counting itself) until its removal commits, then steps down
// and tells the most up-to-date voter to campaign at once; it never
// campaigns again. Reference: §4.2.2.
func TestLeaderRemovesItselfThenHandsOver(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.tick(1)
	idx, _, _, err := sc.confChange(1, ConfChange{Type: ConfRemove, ID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := sc.r(1); r.role != Leader {
		t.Fatalf("the leader stepped down before its removal committed: %s", r.role)
	}
	sc.deliver()
	if r := sc.r(1); r.role == Leader || r.log.committed < idx {
		t.Fatalf("after the removal committed node 1 is %s (commit %d, removal at %d)", r.role, r.log.committed, idx)
	}
	sc.tick(1, 2, 3)
	lead := None
	for _, id := range []NodeID{2, 3} {
		if sc.r(id).role == Leader {
			lead = id
		}
	}
	if lead == None {
		t.Fatal("no leader among 2 and 3 one tick after the hand-over")
	}
	term := sc.r(1).term
	sc.isolate(1)
	sc.tick(5*sc.opts.electionTicks, 1)
	if sc.r(1).role != Follower || sc.r(1).term != term {
		t.Fatalf("the removed node campaigned: %s term %d", sc.r(1).role, sc.r(1).term)
	}
	sc.heal()
	sc.propose(lead, "after")
	sc.tick(2)
}

// TestLearnerPromotedAutomaticallyOnceCaughtUp and a learner added
// without AutoPromote stays one.
func TestLearnerPromotedAutomaticallyOnceCaughtUp(t *testing.T) {
	sc := newScenario(t, 3, func(o *simOptions) { o.promoteLag = 2 })
	sc.elect(1)
	for i := 0; i < 20; i++ {
		sc.propose(1, "fill")
	}
	sc.tick(1)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner, AutoPromote: true}); err != nil {
		t.Fatal(err)
	}
	sc.tick(3)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner}); err != nil {
		t.Fatal(err)
	}
	sc.tick(5)
	c := sc.r(1).Configuration()
	if m, _ := c.Member(4); m.Learner {
		t.Fatalf("learner 4 (auto-promote) not promoted: %v", c)
	}
	if m, _ := c.Member(5); !m.Learner {
		t.Fatalf("learner 5 (no auto-promote) was promoted: %v", c)
	}
}

// TestConfigurationSurvivesSnapshotAndRestart: the configuration is
// stored with snapshots and rebuilt from snapshot + log at restart; ids
// of removed members are never given out again.
func TestConfigurationSurvivesSnapshotAndRestart(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.confChange(1, ConfChange{Type: ConfAddLearner, Name: "four", Addr: "a4"})
	sc.tick(2)
	sc.confChange(1, ConfChange{Type: ConfRemove, ID: 3})
	sc.tick(2)
	for _, id := range []NodeID{1, 2, 4} {
		sc.snapshotAt(id, 0)
	}
	sc.confChange(1, ConfChange{Type: ConfPromote, ID: 4})
	sc.tick(2)
	want := sc.r(1).Configuration()
	for _, id := range []NodeID{1, 2, 4} {
		sc.crash(id)
		sc.restart(id)
		if got := sc.r(id).Configuration(); got.String() != want.String() || got.NextID != want.NextID {
			t.Fatalf("node %d restarted with configuration %v (next id %d), want %v (next id %d)", id, got, got.NextID, want, want.NextID)
		}
	}
	if m, _ := want.Member(4); m.Name != "four" || m.Addr != "a4" {
		t.Fatalf("member 4's name and address were lost: %+v", m)
	}
	sc.tick(3 * sc.opts.electionTicks)
	var lead NodeID
	for _, id := range []NodeID{1, 2, 4} {
		if sc.r(id).role == Leader {
			lead = id
		}
	}
	if lead == None {
		t.Fatal("no leader after the restart")
	}
	sc.tick(1)
	if _, done, _, err := sc.confChange(lead, ConfChange{Type: ConfAddLearner}); err != nil || done.ID != 5 {
		t.Fatalf("a new member got id %d (%v); 3 was used before, 5 is next", done.ID, err)
	}
	if _, _, _, err := sc.confChange(lead, ConfChange{Type: ConfAddLearner, ID: 3}); err == nil {
		t.Fatal("re-adding the removed id 3 was accepted")
	}
}

// TestPromoteOfALearnerFarBehindRefused: promoting a learner that is
// still catching up (a large snapshot, a slow link) would make every
// commit wait for it; it is refused until the learner is within
// PromoteLag, then allowed. (Found in review.)
func TestPromoteOfALearnerFarBehindRefused(t *testing.T) {
	sc := newScenario(t, 3, func(o *simOptions) { o.promoteLag = 2 })
	sc.elect(1)
	_, cc, _, err := sc.confChange(1, ConfChange{Type: ConfAddLearner, Name: "four", Addr: "a4"})
	if err != nil {
		t.Fatal(err)
	}
	sc.tick(2)
	sc.isolate(cc.ID)
	for i := 0; i < 10; i++ {
		sc.propose(1, "fill")
	}
	sc.tick(1)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfPromote, ID: cc.ID}); !errors.Is(err, ErrLearnerBehind) {
		t.Fatalf("promote of a learner 10 entries behind (lag 2): %v; want ErrLearnerBehind", err)
	}
	sc.heal()
	sc.tick(3)
	if _, _, _, err := sc.confChange(1, ConfChange{Type: ConfPromote, ID: cc.ID}); err != nil {
		t.Fatalf("promote once caught up: %v", err)
	}
}
