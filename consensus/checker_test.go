package consensus

import (
	"fmt"
)

// entryKey identifies a log entry by position and term; by Log Matching it
// identifies the whole log prefix up to it.
type entryKey struct {
	Index Index
	Term  Term
}

type entryFacts struct {
	prevTerm Term
	checksum uint32
}

// safetyChecker watches a simulated cluster and reports the first violation
// of a Raft safety property. It keeps only incremental state, so checking
// after every step costs in proportion to what the step changed.
type safetyChecker struct {
	// Election Safety: the one leader of each term, over the whole run.
	leaders map[Term]NodeID
	// Log Matching: every (index, term) ever seen in any log, with the
	// term before it and its checksum. If all logs agree on these facts,
	// equal (index, term) implies equal prefixes by induction.
	facts map[entryKey]entryFacts
	// State Machine Safety: the longest applied sequence seen anywhere.
	applied []entryKey
	// proposed data → 1 once committed, to catch an entry committed twice.
	committedData map[string]bool
	// Leader Append-Only: each sitting leader's last entry as last seen.
	leaderTail map[NodeID]leaderTail
	// commits is each incarnation's commit index as last seen: it must
	// never go back (a stale snapshot installed would take it back).
	commits map[*Raft]Index
}

type leaderTail struct {
	term Term
	last entryKey
}

func newSafetyChecker() *safetyChecker {
	return &safetyChecker{
		leaders:       map[Term]NodeID{},
		facts:         map[entryKey]entryFacts{},
		committedData: map[string]bool{},
		leaderTail:    map[NodeID]leaderTail{},
		commits:       map[*Raft]Index{},
	}
}

// checkNode runs the per-node checks after node r took a step.
func (c *safetyChecker) checkNode(r *Raft) error {
	if err := c.checkLogInvariants(r); err != nil {
		return err
	}
	if r.role != Leader {
		delete(c.leaderTail, r.id)
		return nil
	}
	if r.prevHard.Term != r.term {
		// Won in memory, the term not yet durable (a lone voter wins in
		// the Step that raised its term, and with asynchronous writes
		// the term's write may still be in flight). Nothing it sends
		// leaves before its term is durable (checkVouched), and a crash
		// before that forgets the term: the node may vote in it again
		// after restarting, so another node may lead it. It counts as
		// leader once the term is durable, as in the synchronous mode,
		// where the checker runs only after the write.
		return nil
	}
	// Election Safety.
	if prev, ok := c.leaders[r.term]; ok && prev != r.id {
		return fmt.Errorf("election safety: nodes %d and %d are both leader of term %d", prev, r.id, r.term)
	} else if !ok {
		c.leaders[r.term] = r.id
		// Leader Completeness: a new leader holds everything committed.
		for _, k := range c.applied {
			if k.Index < r.log.snapIndex {
				continue // compacted: held in the snapshot (checkSnapshot)
			}
			if t, ok := r.log.term(k.Index); !ok || t != k.Term {
				return fmt.Errorf("leader completeness: node %d became leader of term %d without committed entry %d (term %d); it has term %d there", r.id, r.term, k.Index, k.Term, t)
			}
		}
	}
	// Leader Append-Only.
	last := entryKey{r.log.lastIndex(), r.log.lastTerm()}
	if tail, ok := c.leaderTail[r.id]; ok && tail.term == r.term {
		if t, ok := r.log.term(tail.last.Index); !ok || t != tail.last.Term {
			return fmt.Errorf("leader append-only: leader %d of term %d had entry %d (term %d), now has term %d there (last index %d)", r.id, r.term, tail.last.Index, tail.last.Term, t, r.log.lastIndex())
		}
	}
	c.leaderTail[r.id] = leaderTail{term: r.term, last: last}
	return nil
}

func (c *safetyChecker) checkLogInvariants(r *Raft) error {
	l := &r.log
	if prev := c.commits[r]; l.committed < prev {
		return fmt.Errorf("commit index went back on node %d from %d to %d (applied %d): its state machine would go back in time", r.id, prev, l.committed, l.applied)
	}
	c.commits[r] = l.committed
	if !(l.snapIndex <= l.applied && l.applied <= l.committed && l.committed <= l.lastIndex() && l.stabled <= l.lastIndex()) {
		return fmt.Errorf("log cursors out of order on node %d: snap %d applied %d committed %d stabled %d last %d", r.id, l.snapIndex, l.applied, l.committed, l.stabled, l.lastIndex())
	}
	return nil
}

// checkSnapshot: a snapshot (taken, installed or restored) must end at an
// entry that is applied somewhere, the one applied at that index: it holds
// only committed state.
func (c *safetyChecker) checkSnapshot(id NodeID, k entryKey) error {
	if int(k.Index) > len(c.applied) {
		return fmt.Errorf("node %d has a snapshot through %d (term %d) but only %d entries were ever applied", id, k.Index, k.Term, len(c.applied))
	}
	if got := c.applied[k.Index-1]; got != k {
		return fmt.Errorf("state machine safety: node %d has a snapshot through %d of term %d where term %d's entry was applied", id, k.Index, k.Term, got.Term)
	}
	return nil
}

// checkEntries runs Log Matching over entries node r is about to persist
// against every entry persisted anywhere so far. recordEntries, once they
// are persisted, adds them: an entry that died in memory with a crash was
// in no server's log, and a lone voter may legitimately write another one
// at the same index and (never durable, never sent) term after restarting.
func (c *safetyChecker) checkEntries(r *Raft, ents []Entry) error {
	if len(ents) == 0 {
		return nil
	}
	prevTerm, ok := r.log.term(ents[0].Index - 1)
	if !ok {
		return fmt.Errorf("node %d: entry %d has no predecessor in its log", r.id, ents[0].Index)
	}
	return c.matchEntries(r.id, prevTerm, ents, false)
}

// recordEntries adds entries that just became durable on node id; prevTerm
// is the term of the entry before the first, as it was when the write was
// handed out. It is not looked up in the core's log now: with
// asynchronous persistence the core may have cut its log below the write
// (a conflicting leader) while it was in flight.
func (c *safetyChecker) recordEntries(id NodeID, prevTerm Term, ents []Entry) error {
	return c.matchEntries(id, prevTerm, ents, true)
}

func (c *safetyChecker) matchEntries(id NodeID, prevTerm Term, ents []Entry, record bool) error {
	for i := range ents {
		e := &ents[i]
		if err := e.Verify(); err != nil {
			return fmt.Errorf("node %d persists a corrupt entry: %w", id, err)
		}
		if i > 0 {
			prevTerm = ents[i-1].Term
		}
		k := entryKey{e.Index, e.Term}
		f := entryFacts{prevTerm: prevTerm, checksum: e.Checksum}
		if old, ok := c.facts[k]; ok && old != f {
			return fmt.Errorf("log matching: node %d has entry %d term %d with previous term %d, checksum %08x; another log had previous term %d, checksum %08x",
				id, e.Index, e.Term, prevTerm, e.Checksum, old.prevTerm, old.checksum)
		} else if !ok && record {
			c.facts[k] = f
		}
	}
	return nil
}

// checkApply runs State Machine Safety for entry e applied by node r,
// whose state machine had applied through lastApplied. (That a committed
// entry was durable on a quorum of the committing leader's configuration
// is checked when the leader commits it: simulation.checkLeaderCommit.)
func (c *safetyChecker) checkApply(r *Raft, lastApplied Index, e Entry) error {
	k := entryKey{e.Index, e.Term}
	if e.Index != lastApplied+1 {
		return fmt.Errorf("node %d applies entry %d after entry %d: gap or repeat", r.id, e.Index, lastApplied)
	}
	if e.Index > r.log.committed {
		return fmt.Errorf("node %d applies entry %d beyond its commit index %d", r.id, e.Index, r.log.committed)
	}
	if int(e.Index) <= len(c.applied) {
		if got := c.applied[e.Index-1]; got != k {
			return fmt.Errorf("state machine safety: node %d applies entry %d of term %d where another node applied term %d", r.id, e.Index, e.Term, got.Term)
		}
		return nil
	}
	if e.Type == EntryNormal {
		d := string(e.Data)
		if c.committedData[d] {
			return fmt.Errorf("command %q committed twice (again at index %d)", d, e.Index)
		}
		c.committedData[d] = true
	}
	c.applied = append(c.applied, k)
	return nil
}
