package consensus

import "testing"

// unreachable tells node to that its connection from node from closed.
func (sc *scenario) unreachable(from, to NodeID) {
	sc.t.Helper()
	if err := sc.r(to).Step(Message{Type: MsgUnreachable, From: from, To: to}); err != nil {
		sc.t.Fatalf("node %d refused MsgUnreachable: %v", to, err)
	}
	sc.ready(to)
}

func (sc *scenario) leader() (NodeID, Term) {
	for _, id := range sc.ids {
		if r := sc.r(id); r != nil && r.role == Leader {
			return id, r.term
		}
	}
	return None, 0
}

// TestLeaderKilledIsReplacedWithinTicksWhenConnectionsClose: the
// followers see their connections from the leader close (its process
// died) and elect a new leader within a few ticks, not after the
// election timeout of 10–20 ticks.
func TestLeaderKilledIsReplacedWithinTicksWhenConnectionsClose(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.propose(1, "before")
	sc.tick(1)
	term := sc.r(1).term
	sc.crash(1)
	sc.unreachable(1, 2)
	sc.unreachable(1, 3)
	for i := 0; i < 6; i++ {
		sc.tick(1, 2, 3)
		if id, tm := sc.leader(); id != None && id != 1 {
			if tm != term+1 {
				t.Fatalf("new leader %d in term %d, want term %d (one clean election)", id, tm, term+1)
			}
			return
		}
	}
	t.Fatalf("no new leader within 6 ticks of the connections closing (election timeout is 10 ticks)")
}

// TestClosedConnectionsFromALiveLeaderDoNotDeposeIt: even if every
// follower is told its connection from the leader closed, a leader that
// is alive keeps its term and its role, because its next heartbeat
// arrives before any follower campaigns.
func TestClosedConnectionsFromALiveLeaderDoNotDeposeIt(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.propose(1, "x")
	sc.tick(1)
	term := sc.r(1).term
	for round := 0; round < 5; round++ {
		sc.unreachable(1, 2)
		sc.unreachable(1, 3)
		sc.tick(7)
		if id, tm := sc.leader(); id != 1 || tm != term {
			t.Fatalf("round %d: leader %d term %d, want node 1 to keep leading in term %d", round, id, tm, term)
		}
		if sc.r(2).lead != 1 || sc.r(3).lead != 1 {
			t.Fatalf("round %d: followers know leaders %d and %d, want 1", round, sc.r(2).lead, sc.r(3).lead)
		}
	}
}

// TestUnreachableFromAFollowerOrOnTheLeaderChangesNothing: only a
// follower's own leader matters.
func TestUnreachableFromAFollowerOrOnTheLeaderChangesNothing(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.tick(1)
	before := sc.r(2).electionElapsed
	sc.unreachable(3, 2) // a fellow follower
	sc.unreachable(2, 1) // the leader hears a follower went away
	if sc.r(2).lead != 1 || sc.r(2).electionElapsed != before || sc.r(1).role != Leader {
		t.Fatalf("node 2 lead %d elapsed %d (was %d); node 1 role %s", sc.r(2).lead, sc.r(2).electionElapsed, before, sc.r(1).role)
	}
}
