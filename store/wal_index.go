package store

import "github.com/lockd/lockd/consensus"

// entryLoc is where one entry of the log is stored.
type entryLoc struct {
	seq  uint64 // segment
	off  int64  // offset of the encoded entry in the segment file
	n    uint32 // encoded length
	term consensus.Term
}

// logIndex is the in-memory map of the log: its bounds and where each
// entry is. Replay starts from the oldest segment's header, which gives
// the bounds but not the places of the entries then stored (they were in
// segments since deleted): those are "missing" until replay sees them
// compacted or replaced. A log that still has missing entries when replay
// ends has lost a segment.
type logIndex struct {
	first, last consensus.Index // 0, 0: empty
	// missingThrough: entries first..missingThrough have no location.
	// Always 0 outside replay.
	missingThrough consensus.Index
	// locs[i] is entry locFirst()+i.
	locs []entryLoc
	// lastTerm is the term of entry last (0 if the log is empty), known
	// also while that entry is missing: segment headers carry it, and
	// replay checks each against it.
	lastTerm consensus.Term
}

func (x *logIndex) locFirst() consensus.Index { return max(x.first, x.missingThrough+1) }

// loc returns where entry i is; ok is false if it is not in the log or
// its place is not known.
func (x *logIndex) loc(i consensus.Index) (entryLoc, bool) {
	lf := x.locFirst()
	if x.last == 0 || i < lf || i > x.last {
		return entryLoc{}, false
	}
	return x.locs[i-lf], true
}

// appendBatch records a batch s..s+len(locs)-1 whose placement was
// checked: it replaces every entry from s on.
func (x *logIndex) appendBatch(s consensus.Index, locs []entryLoc) {
	e := s + consensus.Index(len(locs)) - 1
	x.lastTerm = locs[len(locs)-1].term
	if x.last == 0 {
		x.first, x.last, x.missingThrough = s, e, 0
		x.locs = append(x.locs[:0], locs...)
		return
	}
	if s <= x.missingThrough {
		x.missingThrough = s - 1
	}
	keep := s - x.locFirst()
	x.locs = append(x.locs[:keep], locs...)
	x.last = e
}

// compact removes entries through i; past the end it empties the log.
func (x *logIndex) compact(i consensus.Index) {
	if x.last == 0 || i < x.first {
		return
	}
	if i >= x.last {
		*x = logIndex{}
		return
	}
	lf := x.locFirst()
	x.first = i + 1
	if x.first > lf {
		drop := x.first - lf
		// Copy out once the dropped front is most of the array, so that a
		// long-lived log does not pin every location it ever held.
		if int(drop) > len(x.locs)/2 {
			x.locs = append([]entryLoc(nil), x.locs[drop:]...)
		} else {
			x.locs = x.locs[drop:]
		}
	}
}
