package consensus

import "fmt"

// raftLog is the core's view of the log: every entry after the last
// snapshot, in memory, plus three cursors.
//
// Invariants (checked by the simulation):
//
//	snapIndex ≤ applied ≤ committed ≤ lastIndex
//	stabled ≤ lastIndex; entries (stabled, lastIndex] are not yet durable
//	entries[i].Index == snapIndex+1+i
//	committed entries are never truncated
type raftLog struct {
	snapIndex Index
	snapTerm  Term
	entries   []Entry

	stabled   Index
	committed Index
	applied   Index
}

func (l *raftLog) lastIndex() Index { return l.snapIndex + Index(len(l.entries)) }

func (l *raftLog) lastTerm() Term {
	t, _ := l.term(l.lastIndex())
	return t
}

// term returns the term of entry i; ok is false if i is compacted or beyond
// the end of the log.
func (l *raftLog) term(i Index) (Term, bool) {
	switch {
	case i == l.snapIndex:
		return l.snapTerm, true
	case i < l.snapIndex || i > l.lastIndex():
		return 0, false
	}
	return l.entries[i-l.snapIndex-1].Term, true
}

func (l *raftLog) matchTerm(i Index, t Term) bool {
	lt, ok := l.term(i)
	return ok && lt == t
}

// isUpToDate is the election restriction of §5.4.1: a candidate's log is at
// least as up-to-date as ours if its last term is higher, or equal with an
// index at least as large.
func (l *raftLog) isUpToDate(lastIndex Index, lastTerm Term) bool {
	ourTerm := l.lastTerm()
	return lastTerm > ourTerm || (lastTerm == ourTerm && lastIndex >= l.lastIndex())
}

// slice returns entries [lo, hi) with capacity clipped so that a caller's
// append cannot overwrite the log.
func (l *raftLog) slice(lo, hi Index) []Entry {
	if lo > hi || lo <= l.snapIndex || hi > l.lastIndex()+1 {
		panic(fmt.Sprintf("raftLog.slice(%d, %d) outside (%d, %d]", lo, hi, l.snapIndex, l.lastIndex()+1))
	}
	a, b := lo-l.snapIndex-1, hi-l.snapIndex-1
	return l.entries[a:b:b]
}

// entriesFrom returns up to maxEntries entries from lo, stopping before
// maxBytes would be exceeded (but always at least one entry if any).
func (l *raftLog) entriesFrom(lo Index, maxEntries, maxBytes int) []Entry {
	last := l.lastIndex()
	if lo > last {
		return nil
	}
	hi := lo + Index(maxEntries)
	if hi > last+1 {
		hi = last + 1
	}
	ents := l.slice(lo, hi)
	size := 0
	for i := range ents {
		size += ents[i].Size()
		if size > maxBytes && i > 0 {
			return ents[:i:i]
		}
	}
	return ents
}

// append adds entries that directly follow the log (the leader's path).
func (l *raftLog) append(ents ...Entry) {
	if len(ents) == 0 {
		return
	}
	if ents[0].Index != l.lastIndex()+1 {
		panic(fmt.Sprintf("append of index %d after last index %d", ents[0].Index, l.lastIndex()))
	}
	l.entries = append(l.entries, ents...)
}

// truncateAndAppend replaces the log from ents[0].Index onward.
func (l *raftLog) truncateAndAppend(ents []Entry) {
	first := ents[0].Index
	if first <= l.committed {
		panic(fmt.Sprintf("truncating committed entry %d (committed %d): log matching is broken", first, l.committed))
	}
	if first <= l.snapIndex || first > l.lastIndex()+1 {
		panic(fmt.Sprintf("truncate at %d outside (%d, %d]", first, l.snapIndex, l.lastIndex()+1))
	}
	if first == l.lastIndex()+1 {
		l.entries = append(l.entries, ents...)
		return
	}
	// Full slice expression: append must copy into a new array, so that
	// slices of the old entries already handed out (in messages, in a
	// Ready) never change under their holders.
	keep := first - l.snapIndex - 1
	l.entries = append(l.entries[:keep:keep], ents...)
	if l.stabled >= first {
		l.stabled = first - 1
	}
}

// findConflict returns the index of the first entry in ents that is not
// already in the log with the same term (a conflict or a new entry), or 0
// if every entry is already present.
func (l *raftLog) findConflict(ents []Entry) Index {
	for i := range ents {
		if !l.matchTerm(ents[i].Index, ents[i].Term) {
			return ents[i].Index
		}
	}
	return 0
}

// conflictHint describes our log at a refused prevIndex for fast
// back-tracking: the term we hold there and the first index of that term,
// or (0, lastIndex+1) if our log is too short.
func (l *raftLog) conflictHint(prevIndex Index) (Term, Index) {
	t, ok := l.term(prevIndex)
	if !ok || prevIndex > l.lastIndex() {
		return 0, l.lastIndex() + 1
	}
	i := prevIndex
	for i > l.snapIndex+1 {
		pt, _ := l.term(i - 1)
		if pt != t {
			break
		}
		i--
	}
	return t, i
}

// lastIndexOfTerm returns the last index ≤ max whose term is t, or 0. The
// log's base (the last compacted entry) counts: its term is known.
func (l *raftLog) lastIndexOfTerm(t Term, max Index) Index {
	if max > l.lastIndex() {
		max = l.lastIndex()
	}
	for i := max; i >= l.snapIndex && i > 0; i-- {
		et, _ := l.term(i)
		if et == t {
			return i
		}
		if et < t {
			return 0
		}
	}
	return 0
}

// compact makes index the log's base: entries through it are dropped from
// memory. The kept entries are copied into a new array, so the dropped
// ones can be collected once no message or Ready holds them. The caller
// checks index ≤ min(applied, stabled) and index > snapIndex.
func (l *raftLog) compact(index Index) {
	t, ok := l.term(index)
	if !ok || index > l.applied || index > l.stabled {
		panic(fmt.Sprintf("compacting through %d outside (%d, min(applied %d, stabled %d)]", index, l.snapIndex, l.applied, l.stabled))
	}
	l.entries = append([]Entry(nil), l.slice(index+1, l.lastIndex()+1)...)
	l.snapIndex, l.snapTerm = index, t
}

// restoreSnapshot makes a received snapshot the log's base. Entries after
// it are kept only if the log holds the snapshot's last entry durably
// (Log Matching then says they continue it); otherwise the whole log goes
// (Figure 13, step 6–7). It reports whether the log was discarded.
func (l *raftLog) restoreSnapshot(index Index, term Term) (discarded bool) {
	keep := index > l.snapIndex && index <= l.stabled && l.matchTerm(index, term)
	if keep {
		l.entries = append([]Entry(nil), l.slice(index+1, l.lastIndex()+1)...)
	} else {
		l.entries = nil
		l.stabled = index
	}
	l.snapIndex, l.snapTerm = index, term
	l.committed, l.applied = index, index
	return !keep
}

func (l *raftLog) commitTo(i Index) bool {
	if i <= l.committed {
		return false
	}
	if i > l.lastIndex() {
		panic(fmt.Sprintf("commit index %d beyond last index %d", i, l.lastIndex()))
	}
	l.committed = i
	return true
}

// unstable returns the entries not yet durable.
func (l *raftLog) unstable() []Entry {
	if l.stabled >= l.lastIndex() {
		return nil
	}
	return l.slice(l.stabled+1, l.lastIndex()+1)
}

// toApply returns committed entries not yet handed out for applying.
func (l *raftLog) toApply() []Entry {
	if l.applied >= l.committed {
		return nil
	}
	return l.slice(l.applied+1, l.committed+1)
}
