package store

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockd/lockd/consensus"
)

// Tests of the segment chain: each segment header records where the
// segment before it ends, the term of the log's last entry then, and the
// chain CRC of every record before it, so that a record lost from the end
// of a segment that is not the last (where the torn-tail rule does not
// reach) is found at open.

// lostLastRecordStore writes the review's scenario: entries 1..5 at term
// 2, the hard state at term 3, then a rewrite of 3..5 at term 3 (bounds
// and hard state unchanged) as the last record of segment 1, then a batch
// too big for what is left of it, which starts segment 2. It returns the
// dir, segment 1's path and where the rewrite's record is in it.
func lostLastRecordStore(t *testing.T) (dir, seg string, recStart, recEnd int64) {
	t.Helper()
	dir = t.TempDir()
	s := openT(t, dir, walOptions(4096))
	mustSave(t, s, &consensus.HardState{Term: 2, Vote: 1}, mkEntries(1, 5, 2))
	if err := s.SetHardState(consensus.HardState{Term: 3, Vote: 2}); err != nil {
		t.Fatal(err)
	}
	recStart = s.wal.off
	mustStore(t, s, mkEntries(3, 5, 3))
	recEnd = s.wal.off
	mustStore(t, s, bigEntries(6, 6, 3, 4096-int(recEnd)))
	s.Close()
	segs := segmentPaths(t, dir)
	if len(segs) != 2 {
		t.Fatalf("segments %v, want the rewrite last in segment 1 and the big batch in segment 2", segs)
	}
	want := append(mkEntries(1, 2, 2), mkEntries(3, 5, 3)...)
	want = append(want, bigEntries(6, 6, 3, 4096-int(recEnd))...)
	s = openT(t, dir, walOptions(4096))
	checkLog(t, s, want)
	s.Close()
	return dir, segs[0], recStart, recEnd
}

// The review's reproduction: the acknowledged rewrite of entries 3..5 to
// term 3 is the last record of a segment that is not the last; a disk that
// loses it (zeros where it was) left entry 3 at term 2 with an intact
// log, since the next segment's header (bounds, hard state) agreed with
// what was left. Now the next header's end offset, last term and chain
// disagree with it.
func TestWALLostLastRecordOfAnOlderSegmentIsDetected(t *testing.T) {
	dir, seg, start, end := lostLastRecordStore(t)
	zeroFileRange(t, seg, start, end)
	_, err := Open(dir, walOptions(4096))
	ce := wantCorrupt(t, err, 0, "were lost")
	if ce.Path != seg {
		t.Fatalf("corruption reported in %s, want %s, whose records were lost", ce.Path, seg)
	}
	if !strings.Contains(err.Error(), "0000000000000002.wal") {
		t.Fatalf("%v does not name the segment whose header disagrees", err)
	}
}

// The same loss in a segment that is not the oldest and not the newest,
// of a record that changes nothing the headers carried before (a hard
// state saved again unchanged): only the end offset and the chain tell.
func TestWALLostUnchangedHardStateRecordOfAMiddleSegmentIsDetected(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(4096))
	hs := consensus.HardState{Term: 1, Vote: 1}
	mustSave(t, s, &hs, bigEntries(1, 1, 1, 3000))
	mustStore(t, s, bigEntries(2, 2, 1, 3000)) // segment 2
	start := s.wal.off
	if err := s.SetHardState(hs); err != nil {
		t.Fatal(err)
	}
	end := s.wal.off
	mustStore(t, s, bigEntries(3, 3, 1, 3000)) // segment 3
	s.Close()
	segs := segmentPaths(t, dir)
	if len(segs) != 3 {
		t.Fatalf("segments %v, want 3", segs)
	}
	zeroFileRange(t, segs[1], start, end)
	_, err := Open(dir, walOptions(4096))
	ce := wantCorrupt(t, err, 0, "were lost")
	if ce.Path != segs[1] {
		t.Fatalf("corruption reported in %s, want %s", ce.Path, segs[1])
	}
}

// rewriteSegHeader decodes the header of the segment at path, lets edit
// change it, and writes it back with valid CRCs: a header that is intact
// but says something else than the segments before it.
func rewriteSegHeader(t *testing.T, path string, edit func(*segHeader)) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	typ, p, next, st := readRecord(raw, 0)
	if st != recOK || typ != recSegment {
		t.Fatalf("%s does not start with a segment header", path)
	}
	h, err := decodeSegHeader(p)
	if err != nil {
		t.Fatal(err)
	}
	edit(&h)
	b := appendSegHeader(nil, h)
	if len(b) != next {
		t.Fatalf("re-encoded header is %d bytes, was %d", len(b), next)
	}
	copy(raw, b)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A header that is intact but whose record of the segment before it is
// wrong in one field is refused, naming that field: each of the three is
// checked on its own.
func TestWALSegmentHeaderWithWrongChainOffsetOrLastTermIsRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*segHeader)
		says string
	}{
		{"chain", func(h *segHeader) { h.prevChain ^= 1 }, "chain CRC"},
		{"end offset short", func(h *segHeader) { h.prevEnd -= recHeaderLen }, "past offset"},
		{"end offset long", func(h *segHeader) { h.prevEnd += 8 }, "were lost"},
		{"last term", func(h *segHeader) { h.lastTerm++ }, "last entry"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := multiSegmentStore(t)
			segs := segmentPaths(t, dir)
			rewriteSegHeader(t, segs[2], c.edit)
			_, err := Open(dir, walOptions(4096))
			ce := wantCorrupt(t, err, 0, c.says)
			if ce.Path != segs[1] {
				t.Fatalf("corruption reported in %s, want %s", ce.Path, segs[1])
			}
			if !strings.Contains(err.Error(), filepath.Base(segs[2])) {
				t.Fatalf("%v does not name the segment whose header disagrees", err)
			}
		})
	}
	t.Run("last term with an empty log", func(t *testing.T) {
		b := appendSegHeader(nil, segHeader{seq: 1, lastTerm: 3})
		b = append(b, make([]byte, 64)...)
		_, err := replaySegments("wal", []uint64{1}, func(string) ([]byte, error) { return b, nil }, false)
		wantCorrupt(t, err, 0, "empty log")
	})
}

// The oldest segment left after compaction has no segment before it to
// check its header against: its chain value and last term are where
// replay starts, and the segments after it are checked against them.
func TestWALChainStartsAtTheOldestSegmentLeft(t *testing.T) {
	dir := t.TempDir()
	o := walOptions(4096)
	s := openT(t, dir, o)
	for lo := consensus.Index(1); lo <= 40; lo += 5 {
		mustSave(t, s, &consensus.HardState{Term: 2, Vote: 1, Commit: lo - 1}, bigEntries(lo, lo+4, 2, 300))
	}
	if err := s.DeletePrefix(20); err != nil {
		t.Fatal(err)
	}
	segs := segmentPaths(t, dir)
	if filepath.Base(segs[0]) == filepath.Base(segPath(dir, 1)) {
		t.Fatalf("segments %v: compaction deleted none", segs)
	}
	raw, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	_, p, _, _ := readRecord(raw, 0)
	if h, err := decodeSegHeader(p); err != nil || h.prevChain == 0 || h.prevEnd == 0 || h.lastTerm != 2 {
		t.Fatalf("oldest segment left %s has header %+v, %v: want the end, chain and last term of the deleted segment before it", segs[0], h, err)
	}
	mustStore(t, s, bigEntries(41, 45, 3, 300))
	s.Close()
	s = openT(t, dir, o)
	checkLog(t, s, append(bigEntries(21, 40, 2, 300), bigEntries(41, 45, 3, 300)...))
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// oldSegmentHeader is a segment header of WAL format version 1 (before
// the chain): version, seq, first, last, hard state.
func oldSegmentHeader(seq uint64) []byte {
	return appendRecord(nil, recSegment, func(b []byte) []byte {
		b = append(b, 1)
		b = binary.LittleEndian.AppendUint64(b, seq)
		b = binary.LittleEndian.AppendUint64(b, 0)
		b = binary.LittleEndian.AppendUint64(b, 0)
		return appendHardState(b, consensus.HardState{Term: 1, Vote: 1})
	})
}

// A segment written by a lockd of WAL format 1 is refused with the
// version named, never read as the new layout (whose header is longer).
func TestWALSegmentOfFormatVersion1IsRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(4096))
	mustStore(t, s, mkEntries(1, 3, 1))
	s.Close()
	seg := segmentPaths(t, dir)[0]
	raw := append(oldSegmentHeader(1), make([]byte, 4096)...)
	if err := os.WriteFile(seg, raw[:4096], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, walOptions(4096))
	wantCorrupt(t, err, 0, "WAL format version 1")
}
