package consensus

import (
	"fmt"
	"testing"
)

// snapshotAt makes node id snapshot its applied state and compact its log
// through keep entries before it, as the driver does once the snapshot is
// durable.
func (sc *scenario) snapshotAt(id NodeID, trailing Index) {
	sc.t.Helper()
	n := sc.node(id)
	r := n.raft
	t, _ := r.log.term(r.log.applied)
	k := entryKey{r.log.applied, t}
	if err := sc.check.checkSnapshot(id, k); err != nil {
		sc.t.Fatal(err)
	}
	n.snap, n.snapConf = k, r.ConfigAt(k.Index)
	if k.Index > trailing {
		n.compactDurable(r.Compact(k.Index - trailing))
	}
}

// proposeMany proposes count commands on leader id in batches, delivering
// after each batch.
func (sc *scenario) proposeMany(id NodeID, count, batch int) {
	sc.t.Helper()
	for done := 0; done < count; done += batch {
		data := make([][]byte, min(batch, count-done))
		for i := range data {
			sc.nextCmd++
			data[i] = []byte(fmt.Sprintf("bulk-%d", sc.nextCmd))
		}
		if _, _, err := sc.r(id).Propose(0, data...); err != nil {
			sc.t.Fatalf("propose on node %d: %v", id, err)
		}
		sc.ready(id)
		sc.deliver()
	}
}

// TestFollowerDownFor100000EntriesRejoinsThroughSnapshot: a follower that
// was down while the cluster committed 100,000 entries, and the leader
// compacted its log, catches up by InstallSnapshot and then the log tail,
// not by replaying the entries one MsgApp at a time.
func TestFollowerDownFor100000EntriesRejoinsThroughSnapshot(t *testing.T) {
	sc := newScenario(t, 3, func(o *simOptions) { o.maxEntries = 512 })
	sc.elect(1)
	sc.propose(1, "before")
	sc.tick(1)
	sc.crash(3)
	const entries = 100_000
	for part := 0; part < 4; part++ {
		sc.proposeMany(1, entries/4, 1000)
		sc.snapshotAt(1, 1000)
		sc.snapshotAt(2, 1000)
	}
	r1 := sc.r(1)
	if r1.log.snapIndex < entries-1000 {
		t.Fatalf("setup: leader's log base is %d, want it past %d", r1.log.snapIndex, entries-1000)
	}
	if got := len(r1.log.entries); got > 1100 {
		t.Fatalf("compaction keeps %d entries in memory, want about the 1,000 trailing ones", got)
	}
	stale := sc.node(3).applied
	sc.restart(3)
	sc.tick(3)
	n3 := sc.node(3)
	if n3.snapshotsInstalled != 1 {
		t.Fatalf("node 3 installed %d snapshots, want 1", n3.snapshotsInstalled)
	}
	for i := 0; i < 20 && n3.raft.log.applied < r1.log.committed; i++ {
		sc.tick(1)
	}
	if n3.raft.log.applied != r1.log.committed {
		t.Fatalf("node 3 applied %d, the leader committed %d", n3.raft.log.applied, r1.log.committed)
	}
	// Everything it applied from the log came after the snapshot.
	if fromLog := n3.raft.log.applied - n3.snap.Index; fromLog > 1100 {
		t.Fatalf("node 3 applied %d entries from the log after the snapshot at %d; it should have skipped the %d it missed", fromLog, n3.snap.Index, entries)
	}
	t.Logf("node 3 went from applied %d to snapshot %v, then applied through %d", stale, n3.snap, n3.raft.log.applied)
	// A write after the rejoin commits on all three.
	idx := sc.propose(1, "after")
	sc.tick(2)
	for _, id := range []NodeID{1, 2, 3} {
		if sc.r(id).log.applied < idx {
			t.Fatalf("node %d did not apply the write after the rejoin (applied %d, want %d)", id, sc.r(id).log.applied, idx)
		}
	}
}

// TestFailedSnapshotTransferIsRetriedAndLeavesFollowerIntact: a transfer
// that fails leaves the follower's state as it was (no install), and the
// leader tries again once the follower answers.
func TestFailedSnapshotTransferIsRetriedAndLeavesFollowerIntact(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	sc.propose(1, "a")
	sc.tick(1)
	sc.crash(3)
	sc.proposeMany(1, 200, 50)
	sc.snapshotAt(1, 10)
	before := sc.node(3).log
	sc.failSnapshots = 2
	sc.restart(3)
	sc.tick(1)
	n3 := sc.node(3)
	if n3.snapshotsInstalled != 0 || n3.snap.Index != 0 || len(n3.log) != len(before) {
		t.Fatalf("a failed transfer changed node 3: installed %d, snapshot %v, log %d entries (was %d)", n3.snapshotsInstalled, n3.snap, len(n3.log), len(before))
	}
	if pr := sc.r(1).prs[3]; pr.state == snapshotting {
		t.Fatalf("leader still waits for a snapshot it was told failed")
	}
	sc.tick(5)
	if n3.snapshotsInstalled != 1 || n3.raft.log.applied != sc.r(1).log.committed {
		t.Fatalf("after the failures node 3 installed %d snapshots and applied %d (leader committed %d)", n3.snapshotsInstalled, n3.raft.log.applied, sc.r(1).log.committed)
	}
	if sc.stats.snapshotsSent < 3 {
		t.Fatalf("%d transfers started, want the 2 failed ones and a retry", sc.stats.snapshotsSent)
	}
}

// TestSnapshotInstallDiscardsDivergingLog: a follower whose log holds
// another term at the snapshot's last index drops its whole log, and one
// that holds the same entry keeps what follows it.
func TestSnapshotInstallDiscardsDivergingLog(t *testing.T) {
	for _, c := range []struct {
		name        string
		terms       []Term
		wantDiscard bool
	}{
		{"diverging", []Term{1, 1, 2, 2, 2, 2, 2}, true},
		{"matching", []Term{1, 1, 1, 1, 1, 1, 1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := New(Config{ID: 2, Voters: []NodeID{1, 2, 3}}, Restored{HardState: HardState{Term: 2}, Entries: sealed(c.terms...)})
			if err != nil {
				t.Fatal(err)
			}
			r.Advance(r.Ready())
			if !r.SnapshotReceived(1, SnapshotMeta{Index: 5, Term: 1, Voters: []NodeID{1, 2, 3}}, NewConfiguration([]NodeID{1, 2, 3}, nil)) {
				t.Fatal("snapshot ahead of the commit index refused")
			}
			rd := r.Ready()
			if rd.InstallSnapshot == nil || rd.InstallSnapshot.DiscardLog != c.wantDiscard {
				t.Fatalf("install %+v, want DiscardLog %v", rd.InstallSnapshot, c.wantDiscard)
			}
			wantLast := Index(5)
			if !c.wantDiscard {
				wantLast = 7
			}
			if r.log.lastIndex() != wantLast || r.log.committed != 5 || r.log.applied != 5 || len(rd.CommittedEntries) != 0 {
				t.Fatalf("after install: last %d commit %d applied %d, %d entries to apply", r.log.lastIndex(), r.log.committed, r.log.applied, len(rd.CommittedEntries))
			}
			if len(rd.MessagesAfterPersist) != 1 || rd.MessagesAfterPersist[0].Type != MsgAppResp || rd.MessagesAfterPersist[0].Index != 5 {
				t.Fatalf("the install must be acknowledged after persist: %+v", rd.MessagesAfterPersist)
			}
			r.Advance(rd)
			if r.SnapshotReceived(1, SnapshotMeta{Index: 5, Term: 1, Voters: []NodeID{1, 2, 3}}, NewConfiguration([]NodeID{1, 2, 3}, nil)) {
				t.Fatal("a snapshot not ahead of the commit index was installed")
			}
		})
	}
}

func sealed(terms ...Term) []Entry {
	ents := make([]Entry, len(terms))
	for i, t := range terms {
		ents[i] = Entry{Index: Index(i + 1), Term: t, Data: []byte(fmt.Sprintf("e%d", i+1))}
		ents[i].Seal()
	}
	return ents
}

func TestTrimLog(t *testing.T) {
	ents := sealed(1, 1, 2, 2, 3)
	for _, c := range []struct {
		name          string
		snapI         Index
		snapT         Term
		ents          []Entry
		base          Index
		kept          int
		discard, fail bool
	}{
		{"no snapshot, whole log", 0, 0, ents, 0, 5, false, false},
		{"no snapshot, log not from 1", 0, 0, ents[2:], 0, 0, false, true},
		{"snapshot inside the log, matching: first entry becomes base", 4, 2, ents, 1, 4, false, false},
		{"snapshot inside the log, other term", 4, 3, ents, 4, 0, true, false},
		{"log behind the snapshot", 9, 4, ents, 9, 0, true, false},
		{"log right after the snapshot", 2, 1, ents[2:], 2, 3, false, false},
		{"gap after the snapshot", 1, 1, ents[3:], 0, 0, false, true},
		{"empty log", 7, 3, nil, 7, 0, false, false},
	} {
		base, _, kept, discard, err := TrimLog(c.snapI, c.snapT, c.ents)
		if (err != nil) != c.fail || base != c.base || len(kept) != c.kept || discard != c.discard {
			t.Errorf("%s: base %d kept %d discard %v err %v; want base %d kept %d discard %v fail %v", c.name, base, len(kept), discard, err, c.base, c.kept, c.discard, c.fail)
		}
	}
}
