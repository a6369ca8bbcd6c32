package consensus

import "testing"

// A follower steps two appends between Readies: a repeat of term 2's
// entries (it answers with an acknowledgement of 3), then term 3's
// leader's conflicting entry at 2. The acknowledgement of 3 must not
// leave with the write that replaces entries 2..3: it would vouch for an
// entry the follower no longer holds. Found by the batched simulation
// (async seed 497).
func TestAckOfEntriesReplacedBeforeTheWriteIsDropped(t *testing.T) {
	seal := func(i Index, tm Term) Entry {
		e := Entry{Index: i, Term: tm, Type: EntryNoop}
		e.Seal()
		return e
	}
	e1, e2, e3 := seal(1, 1), seal(2, 2), seal(3, 2)
	r, err := New(Config{ID: 3, Voters: []NodeID{1, 2, 3}}, Restored{HardState: HardState{Term: 2}, Entries: []Entry{e1, e2, e3}})
	if err != nil {
		t.Fatal(err)
	}
	r.Advance(r.Ready())
	// Leader 1 of term 2 resends 2..3, which we hold: we acknowledge 3.
	if err := r.Step(Message{Type: MsgApp, From: 1, To: 3, Term: 2, PrevIndex: 1, PrevTerm: 1, Entries: []Entry{e2, e3}}); err != nil {
		t.Fatal(err)
	}
	// Before the Ready, leader 2 of term 3 replaces 2.. with its entry.
	n2 := seal(2, 3)
	if err := r.Step(Message{Type: MsgApp, From: 2, To: 3, Term: 3, PrevIndex: 1, PrevTerm: 1, Entries: []Entry{n2}}); err != nil {
		t.Fatal(err)
	}
	rd := r.Ready()
	if len(rd.Entries) != 1 || rd.Entries[0].Index != 2 || rd.Entries[0].Term != 3 {
		t.Fatalf("setup: the write should replace the log from 2 with term 3's entry: %+v", rd.Entries)
	}
	for _, m := range append(rd.Messages, rd.MessagesAfterPersist...) {
		if m.Type == MsgAppResp && !m.Reject && m.Index >= 2 && m.Term == 2 {
			t.Fatalf("acknowledgement of %d to node %d in term 2 leaves with the write that replaces it", m.Index, m.To)
		}
	}
	var acked bool
	for _, m := range rd.MessagesAfterPersist {
		acked = acked || (m.Type == MsgAppResp && m.To == 2 && m.Index == 2 && !m.Reject)
	}
	if !acked {
		t.Fatalf("term 3's leader gets no acknowledgement of 2: %+v", rd.MessagesAfterPersist)
	}
}
