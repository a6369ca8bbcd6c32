package consensus

import (
	"fmt"
	"math/rand"
	"testing"
)

// leaderTraffic returns the appends and heartbeats among msgs.
func leaderTraffic(msgs []Message) []Message {
	var out []Message
	for _, m := range msgs {
		if m.Type == MsgApp || m.Type == MsgHeartbeat {
			out = append(out, m)
		}
	}
	return out
}

// TestAsyncLoneVoterWithLearnerWaitsForItsTerm: a lone voter wins in the
// Step that raises its term, with a learner to replicate to. Its appends
// and heartbeats must not leave before that term is durable, also in
// Readies taken while the write of the term is in flight (Raft.send: a
// crash and a second win of the same term could otherwise send the
// learner other entries at the same index and term), and it commits
// nothing it has not made durable itself: entries in flight do not count.
// Reference: §3.8 (dissertation), and the async contract on Ready.
func TestAsyncLoneVoterWithLearnerWaitsForItsTerm(t *testing.T) {
	r, err := New(Config{ID: 1, Voters: []NodeID{1}, Learners: []NodeID{2}, ElectionTicks: 10, HeartbeatTicks: 1,
		Rand: rand.New(rand.NewSource(1))}, Restored{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && r.role != Leader; i++ {
		r.Tick()
	}
	if r.role != Leader || r.term != 1 {
		t.Fatalf("setup: node is %s in term %d, want leader in term 1", r.role, r.term)
	}
	rd1 := r.Ready()
	if len(leaderTraffic(rd1.Messages)) > 0 {
		t.Fatalf("appends left before the term was durable: %+v", rd1.Messages)
	}
	if !rd1.MustSaveHardState || rd1.HardState.Term != 1 || len(rd1.Entries) != 1 || len(leaderTraffic(rd1.MessagesAfterPersist)) == 0 {
		t.Fatalf("first Ready: hard state %v (%+v), %d entries, %d messages after persist; want term 1, the no-op, the learner's append",
			rd1.MustSaveHardState, rd1.HardState, len(rd1.Entries), len(rd1.MessagesAfterPersist))
	}
	r.AdvanceAsync(rd1)

	// While the term's write is in flight: proposals, heartbeats, Readies.
	for i := 0; i < 3; i++ {
		if _, _, err := r.Propose(int64(i), []byte(fmt.Sprintf("p%d", i))); err != nil {
			t.Fatal(err)
		}
		r.Tick()
		if !r.HasReady() {
			continue
		}
		rd := r.Ready()
		if tr := leaderTraffic(rd.Messages); len(tr) > 0 {
			t.Fatalf("Ready %d during the term's write lets %d appends/heartbeats leave at once: %+v", i, len(tr), tr)
		}
		if len(rd.Entries) > 0 || rd.MustSaveHardState || len(rd.MessagesAfterPersist) > 0 || len(rd.CommittedEntries) > 0 {
			t.Fatalf("Ready %d during a write holds %d entries, hard state %v, %d messages after persist, %d committed",
				i, len(rd.Entries), rd.MustSaveHardState, len(rd.MessagesAfterPersist), len(rd.CommittedEntries))
		}
		r.Advance(rd)
	}
	if c := r.log.committed; c != 0 {
		t.Fatalf("lone voter committed %d with nothing durable", c)
	}

	r.Persisted(rd1) // the no-op and term 1 are durable
	if c := r.log.committed; c != 1 {
		t.Fatalf("commit %d once the no-op is durable, want 1 (the proposals at 2..4 are not)", c)
	}
	rd2 := r.Ready()
	held := leaderTraffic(rd2.MessagesAfterPersist)
	if len(held) == 0 || len(rd2.Entries) != 3 || len(rd2.CommittedEntries) != 1 {
		t.Fatalf("Ready after the write: %d held appends/heartbeats, %d entries, %d committed; want the held traffic, 2..4, the no-op",
			len(held), len(rd2.Entries), len(rd2.CommittedEntries))
	}
	r.AdvanceAsync(rd2)
	if c := r.log.committed; c != 1 {
		t.Fatalf("commit %d with 2..4 in flight, want 1", c)
	}
	r.Persisted(rd2)
	if c := r.log.committed; c != 4 {
		t.Fatalf("commit %d once 2..4 are durable, want 4", c)
	}
	// With the term durable, leader traffic leaves at once again.
	for i := 0; i < 2; i++ {
		r.Tick()
	}
	if rd := r.Ready(); len(leaderTraffic(rd.Messages)) == 0 {
		t.Fatalf("no append or heartbeat left at once after the term was durable: %+v", rd.Messages)
	}
}
