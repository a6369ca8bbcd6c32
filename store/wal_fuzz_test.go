package store

import (
	"os"
	"testing"

	"github.com/lockd/lockd/consensus"
)

// walSeedSegment is a well-formed segment: header, a Save, a hard state
// and a compaction, then zeros.
func walSeedSegment() []byte {
	b := appendSegHeader(nil, segHeader{seq: 1})
	hs := consensus.HardState{Term: 2, Vote: 1, Commit: 3}
	b, _ = appendEntriesRecord(b, &hs, mkEntries(1, 4, 2), nil)
	b = appendHardStateRecord(b, consensus.HardState{Term: 3, Vote: 2, Commit: 4})
	b, _ = appendEntriesRecord(b, nil, mkEntries(3, 6, 3), nil)
	b = appendCompactRecord(b, 2)
	return append(b, make([]byte, 256)...)
}

// walSeedNextSegment is a well-formed segment 2 to follow
// walSeedSegment: its header chains to segment 1 as the WAL writes it
// (taken from a replay of segment 1), then a batch, then zeros.
func walSeedNextSegment(tb testing.TB) []byte {
	seg1 := walSeedSegment()
	r, err := replaySegments("wal", []uint64{1}, func(string) ([]byte, error) { return seg1, nil }, false)
	if err != nil {
		tb.Fatal(err)
	}
	b := appendSegHeader(nil, segHeader{seq: 2, first: r.idx.first, last: r.idx.last, hs: r.hs,
		lastTerm: r.idx.lastTerm, prevEnd: r.end, prevChain: r.chain})
	b, _ = appendEntriesRecord(b, nil, mkEntries(5, 8, 4), nil)
	return append(b, make([]byte, 128)...)
}

// FuzzWALSegment replays arbitrary bytes as a WAL's only segment, and as
// segment 2 after the seed segment (so that the checks of a header
// against the segment before it run too). It must never panic, and
// whatever replay accepts must be readable: every entry of the log it
// reports decodes and passes its checksum where the index says it is.
// The seeds run in every `go test`.
func FuzzWALSegment(f *testing.F) {
	good := walSeedSegment()
	next := walSeedNextSegment(f)
	firstRec := recHeaderLen + segHeaderLen // where the first record after the header starts
	for _, seg := range [][]byte{good, next} {
		f.Add(seg)
		f.Add(seg[:len(seg)-160]) // cut mid-record
		gap := append([]byte(nil), seg[:firstRec+20]...)
		f.Add(append(gap, seg[firstRec+21:]...)) // a byte missing mid-log
		flipped := append([]byte(nil), seg...)
		flipped[firstRec+recHeaderLen+3] ^= 0x40 // in the first record's payload
		f.Add(flipped)
	}
	hdr := append([]byte(nil), next...)
	hdr[recHeaderLen+segHeaderLen-1] ^= 0x01 // the chain value, with the header CRC now wrong
	f.Add(hdr)
	f.Add(append(appendRecord(nil, recSegment, func(b []byte) []byte { // a version 1 header
		b = append(b, 1)
		return append(b, make([]byte, 40)...)
	}), make([]byte, 64)...))
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkReplayOf(t, [][]byte{data})
		checkReplayOf(t, [][]byte{good, data})
	})
}

// checkReplayOf replays segs as segments 1, 2, ... and, if replay accepts
// them, checks that every entry of the log it reports is where it says.
func checkReplayOf(t *testing.T, segs [][]byte) {
	seqs := make([]uint64, len(segs))
	for i := range segs {
		seqs[i] = uint64(i + 1)
	}
	read := func(path string) ([]byte, error) {
		for i, seq := range seqs {
			if path == segPath("wal", seq) {
				return segs[i], nil
			}
		}
		return nil, os.ErrNotExist
	}
	r, err := replaySegments("wal", seqs, read, false)
	if err != nil {
		return
	}
	last := segs[len(segs)-1]
	if r.end > int64(len(last)) || r.tornEnd > int64(len(last)) {
		t.Fatalf("replay ends at %d (torn to %d) in %d bytes", r.end, r.tornEnd, len(last))
	}
	if r.idx.last == 0 {
		return
	}
	for i := r.idx.first; i <= r.idx.last; i++ {
		l, ok := r.idx.loc(i)
		if !ok {
			t.Fatalf("replay accepted log [%d, %d] but has no place for entry %d", r.idx.first, r.idx.last, i)
		}
		if l.seq < 1 || l.seq > uint64(len(segs)) {
			t.Fatalf("entry %d in segment %d of %d", i, l.seq, len(segs))
		}
		data := segs[l.seq-1]
		if l.off < 0 || l.off+int64(l.n) > int64(len(data)) || (l.seq == uint64(len(segs)) && l.off+int64(l.n) > r.end) {
			t.Fatalf("entry %d at [%d, %d) of segment %d, past the end of its records", i, l.off, l.off+int64(l.n), l.seq)
		}
		e, err := decodeWALEntryData(data[l.off:l.off+int64(l.n)], i, true)
		if err != nil {
			t.Fatalf("replay accepted entry %d, which does not decode: %v", i, err)
		}
		if i == r.idx.last && e.Term != r.idx.lastTerm {
			t.Fatalf("replay says the last entry %d has term %d, but it has term %d", i, r.idx.lastTerm, e.Term)
		}
	}
}

// The seed segment replays to what was written: a check that the fuzz
// target's seeds exercise the real paths.
func TestWALSeedSegmentReplays(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(segPath(dir, 1), walSeedSegment(), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := replayWAL(dir, []uint64{1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.idx.first != 3 || r.idx.last != 6 || r.hs != (consensus.HardState{Term: 3, Vote: 2, Commit: 4}) || r.tornEnd != 0 {
		t.Fatalf("replayed log [%d, %d], hard state %+v, torn to %d", r.idx.first, r.idx.last, r.hs, r.tornEnd)
	}
	l, _ := r.idx.loc(3)
	if l.term != 3 {
		t.Fatalf("entry 3 has term %d after the truncation, want 3", l.term)
	}
}

// The seed of segment 2 replays after segment 1: the chain the fuzz seeds
// start from is the one the WAL checks.
func TestWALSeedNextSegmentReplays(t *testing.T) {
	dir := t.TempDir()
	for seq, b := range map[uint64][]byte{1: walSeedSegment(), 2: walSeedNextSegment(t)} {
		if err := os.WriteFile(segPath(dir, seq), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := replayWAL(dir, []uint64{1, 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.idx.first != 3 || r.idx.last != 8 || r.idx.lastTerm != 4 || r.tornEnd != 0 {
		t.Fatalf("replayed log [%d, %d], last term %d, torn to %d", r.idx.first, r.idx.last, r.idx.lastTerm, r.tornEnd)
	}
}
