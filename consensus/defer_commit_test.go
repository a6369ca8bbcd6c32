package consensus

import "testing"

// commitOnlyAppends counts the MsgApp messages in sent that carry no
// entries: those that only tell a follower the commit index.
func commitOnlyAppends(sent []Message) int {
	n := 0
	for _, m := range sent {
		if m.Type == MsgApp && len(m.Entries) == 0 {
			n++
		}
	}
	return n
}

// TestDeferredCommitReachesFollowersWithTheNextAppendOrAFlush: with
// DeferCommitBroadcast a commit with nothing else to send costs no message;
// the next proposal's append carries it, or FlushCommit sends it.
func TestDeferredCommitReachesFollowersWithTheNextAppendOrAFlush(t *testing.T) {
	sc := newScenario(t, 3, func(o *simOptions) { o.deferCommit = true })
	sc.elect(1)
	sc.deliver()
	leader := sc.r(1)
	// The no-op's commit may be held back as well: tell everyone first.
	leader.FlushCommit()
	sc.ready(1)
	sc.deliver()

	sc.sent = nil
	i1 := sc.propose(1, "a")
	sc.deliver()
	if leader.log.committed < i1 {
		t.Fatalf("leader committed %d, want %d", leader.log.committed, i1)
	}
	if n := commitOnlyAppends(sc.sent); n != 0 {
		t.Fatalf("%d commit-only appends sent, want none", n)
	}
	if !leader.CommitUntold() {
		t.Fatal("the leader does not report a held-back commit")
	}
	for _, id := range []NodeID{2, 3} {
		if c := sc.r(id).log.committed; c >= i1 {
			t.Fatalf("follower %d knows commit %d already", id, c)
		}
	}

	// The next proposal's append carries the commit.
	i2 := sc.propose(1, "b")
	for _, id := range []NodeID{2, 3} {
		sc.deliverMessages()
		if c := sc.r(id).log.committed; c < i1 {
			t.Fatalf("follower %d did not learn commit %d from the next append (has %d)", id, i1, c)
		}
	}
	if leader.log.committed < i2 || !leader.CommitUntold() {
		t.Fatalf("leader committed %d (want %d), untold %v (want true)", leader.log.committed, i2, leader.CommitUntold())
	}

	// A flush tells them, once.
	sc.sent = nil
	leader.FlushCommit()
	sc.ready(1)
	sc.deliver()
	if n := commitOnlyAppends(sc.sent); n != 2 {
		t.Fatalf("flush sent %d commit-only appends, want 2", n)
	}
	for _, id := range []NodeID{2, 3} {
		if c := sc.r(id).log.committed; c < i2 {
			t.Fatalf("follower %d did not learn commit %d from the flush (has %d)", id, i2, c)
		}
	}
	if leader.CommitUntold() {
		t.Fatal("still untold after the flush")
	}
	sc.sent = nil
	leader.FlushCommit()
	sc.ready(1)
	if len(sc.net) != 0 {
		t.Fatalf("a flush with nothing held back sent %d messages", len(sc.net))
	}
}

// TestCommitIsBroadcastAtOnceByDefault: without the option a commit goes
// out to the followers with the next Ready, as before.
func TestCommitIsBroadcastAtOnceByDefault(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.deliver()
	i1 := sc.propose(1, "a")
	sc.deliver()
	for _, id := range []NodeID{2, 3} {
		if c := sc.r(id).log.committed; c < i1 {
			t.Fatalf("follower %d has commit %d, want %d", id, c, i1)
		}
	}
	if sc.r(1).CommitUntold() {
		t.Fatal("commit held back without the option")
	}
}
