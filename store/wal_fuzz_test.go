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

// FuzzWALSegment replays arbitrary bytes as the only segment of a WAL. It
// must never panic, and whatever replay accepts must be readable: every
// entry of the log it reports decodes and passes its checksum where the
// index says it is. The seeds run in every `go test`.
func FuzzWALSegment(f *testing.F) {
	good := walSeedSegment()
	f.Add(good)
	f.Add(good[:len(good)-300])                  // cut mid-record
	f.Add(append(good[:100:100], good[101:]...)) // a byte missing mid-log
	flipped := append([]byte(nil), good...)
	flipped[70] ^= 0x40
	f.Add(flipped)
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		read := func(string) ([]byte, error) { return data, nil }
		r, err := replaySegments("wal", []uint64{1}, read, false)
		if err != nil {
			return
		}
		if r.end > int64(len(data)) || r.tornEnd > int64(len(data)) {
			t.Fatalf("replay ends at %d (torn to %d) in %d bytes", r.end, r.tornEnd, len(data))
		}
		if r.idx.last == 0 {
			return
		}
		for i := r.idx.first; i <= r.idx.last; i++ {
			l, ok := r.idx.loc(i)
			if !ok {
				t.Fatalf("replay accepted log [%d, %d] but has no place for entry %d", r.idx.first, r.idx.last, i)
			}
			if l.off < 0 || l.off+int64(l.n) > r.end {
				t.Fatalf("entry %d at [%d, %d), past the end of the records at %d", i, l.off, l.off+int64(l.n), r.end)
			}
			if _, err := decodeWALEntryData(data[l.off:l.off+int64(l.n)], i, true); err != nil {
				t.Fatalf("replay accepted entry %d, which does not decode: %v", i, err)
			}
		}
	})
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
