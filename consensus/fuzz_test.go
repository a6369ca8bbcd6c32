package consensus

import (
	"encoding/binary"
	"testing"
)

// FuzzStep feeds arbitrary messages to cores in every role: whatever a
// peer sends, the core must answer with an error or a state change that
// keeps its invariants, never a panic.
func FuzzStep(f *testing.F) {
	f.Add([]byte{1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 9, 200, 3})
	f.Add([]byte{7, 3, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 1, 1, 1, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		sc := newScenario(t, 3, nil)
		sc.elect(1)
		sc.propose(1, "a")
		sc.deliver()
		sc.expectViolation = true // report below, after the fuzz input
		rd := fuzzReader{data: data}
		for rd.more() {
			target := NodeID(1 + rd.byte()%3)
			m := Message{
				Type:          MessageType(rd.byte() % 13),
				From:          NodeID(rd.byte() % 5),
				To:            target,
				Term:          Term(rd.u64() % 8),
				PrevIndex:     Index(rd.u64() % 8),
				PrevTerm:      Term(rd.u64() % 8),
				Commit:        Index(rd.u64() % 8),
				Index:         Index(rd.u64()),
				Reject:        rd.byte()%2 == 0,
				RejectIndex:   Index(rd.u64() % 8),
				ConflictTerm:  Term(rd.u64() % 8),
				ConflictIndex: Index(rd.u64()),
				Context:       rd.u64() % 4,
			}
			for n := rd.byte() % 4; n > 0; n-- {
				e := Entry{Index: m.PrevIndex + Index(len(m.Entries)) + 1, Term: Term(rd.byte() % 8), Data: []byte{rd.byte()}}
				if rd.byte()%4 != 0 {
					e.Seal()
				}
				m.Entries = append(m.Entries, e)
			}
			_ = sc.r(target).Step(m)
			sc.ready(target)
			if rd.byte()%3 == 0 {
				sc.tick(1)
			}
		}
		// Byzantine input may break agreement (Raft trusts its peers), but
		// each node's own cursors must stay in order.
		for _, id := range sc.ids {
			if err := sc.check.checkLogInvariants(sc.r(id)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

type fuzzReader struct {
	data []byte
	pos  int
}

func (r *fuzzReader) more() bool { return r.pos < len(r.data) }

func (r *fuzzReader) byte() byte {
	if r.pos >= len(r.data) {
		return 0
	}
	b := r.data[r.pos]
	r.pos++
	return b
}

func (r *fuzzReader) u64() uint64 {
	var b [8]byte
	for i := range b {
		b[i] = r.byte()
	}
	return binary.BigEndian.Uint64(b[:])
}
