package store

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

// walOptions opens a store whose log is a WAL of segSize-byte segments.
func walOptions(segSize int64) Options {
	return Options{RaftLog: RaftLogWAL, WALSegmentSize: segSize}
}

// segmentPaths lists the WAL segment files in a data dir, oldest first.
func segmentPaths(t testing.TB, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, WALDirName, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	return paths
}

// bigEntries returns sealed entries lo..hi of term with size bytes of data
// each, so that a few fill a small segment.
func bigEntries(lo, hi consensus.Index, term consensus.Term, size int) []consensus.Entry {
	ents := mkEntries(lo, hi, term)
	for i := range ents {
		ents[i].Data = append(ents[i].Data, make([]byte, size)...)
		for j := range ents[i].Data[len(ents[i].Data)-size:] {
			ents[i].Data[len(ents[i].Data)-size+j] = byte(uint64(ents[i].Index) + uint64(j))
		}
		ents[i].Seal()
	}
	return ents
}

func mustSave(t testing.TB, s *Store, hs *consensus.HardState, ents []consensus.Entry) {
	t.Helper()
	if err := s.Save(hs, ents); err != nil {
		t.Fatal(err)
	}
}

func wantHardState(t testing.TB, s *Store, want consensus.HardState) {
	t.Helper()
	if got, err := s.HardState(); err != nil || got != want {
		t.Fatalf("HardState() = %+v, %v; want %+v", got, err, want)
	}
}

func TestWALIsTheDefaultForNewDirs(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	if s.RaftLog() != RaftLogWAL {
		t.Fatalf("new data dir uses %q, want %q", s.RaftLog(), RaftLogWAL)
	}
	if got := segmentPaths(t, dir); len(got) != 1 {
		t.Fatalf("new WAL has segments %v, want one", got)
	}
	fi, err := os.Stat(segmentPaths(t, dir)[0])
	if err != nil || fi.Size() != DefaultWALSegmentSize {
		t.Fatalf("first segment: %v, %v; want %d bytes, preallocated", fi, err, DefaultWALSegmentSize)
	}
	mustSave(t, s, &consensus.HardState{Term: 2, Vote: 1}, mkEntries(1, 3, 2))
	s.Close()
	s = openT(t, dir, Options{})
	checkLog(t, s, mkEntries(1, 3, 2))
	wantHardState(t, s, consensus.HardState{Term: 2, Vote: 1})
	// The bbolt file holds neither the log nor the hard state.
	s.Close()
	rewrite(t, dir, func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLog).Cursor().First(); k != nil || tx.Bucket(bucketStable).Get(keyHardState) != nil {
			t.Error("a WAL store wrote the log or the hard state into bbolt")
		}
		return nil
	})
}

func TestBackendIsTheDirsNotTheOption(t *testing.T) {
	for _, c := range []struct{ created, asked string }{{RaftLogBolt, RaftLogWAL}, {RaftLogWAL, RaftLogBolt}, {RaftLogBolt, ""}} {
		t.Run(c.created+"-asked-"+c.asked, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{RaftLog: c.created})
			mustSave(t, s, &consensus.HardState{Term: 1}, mkEntries(1, 5, 1))
			s.Close()
			var logs logBuffer
			s = openT(t, dir, Options{RaftLog: c.asked, Logger: logs.logger()})
			if s.RaftLog() != c.created {
				t.Fatalf("dir created with %q opened as %q", c.created, s.RaftLog())
			}
			checkLog(t, s, mkEntries(1, 5, 1))
			warned := strings.Contains(logs.String(), "[WARN]") && strings.Contains(logs.String(), "keeps the raft log backend it was created with")
			if warned != (c.asked != "") {
				t.Fatalf("asked for %q in a %s dir: warned %v: %q", c.asked, c.created, warned, logs.String())
			}
			_, err := os.Stat(filepath.Join(dir, WALDirName))
			if hasWAL := err == nil; hasWAL != (c.created == RaftLogWAL) {
				t.Fatalf("WAL dir exists: %v, for a dir created with %q", hasWAL, c.created)
			}
		})
	}
}

// A data dir from before the WAL has no backend record: it is bbolt, and
// stays so.
func TestDirFromBeforeTheWALStaysBolt(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, boltOptions0)
	mustStore(t, s, mkEntries(1, 4, 1))
	s.Close()
	rewrite(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyRaftLog) })
	var logs logBuffer
	s = openT(t, dir, Options{Logger: logs.logger()})
	if s.RaftLog() != RaftLogBolt {
		t.Fatalf("old data dir opened as %q", s.RaftLog())
	}
	checkLog(t, s, mkEntries(1, 4, 1))
	if !strings.Contains(logs.String(), "keeps its raft log in bbolt") {
		t.Fatalf("no line saying the old dir keeps bbolt: %q", logs.String())
	}
}

func TestOpenRefusesBadWALOptions(t *testing.T) {
	for _, o := range []Options{{RaftLog: "sqlite"}, {WALSegmentSize: 100}, {WALSegmentSize: -1}} {
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("Open with %+v accepted", o)
		}
	}
}

func TestOpenRefusesUnknownBackendRecord(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, Options{}).Close()
	rewrite(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyRaftLog, []byte("lsm")) })
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "newer lockd") {
		t.Fatalf("Open with an unknown backend record: %v, want an error asking for a newer lockd", err)
	}
}

// Losing the WAL must never look like a new, empty log: the term and vote
// would be forgotten.
func TestOpenRefusesLostWAL(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(testSegmentSize))
	mustSave(t, s, &consensus.HardState{Term: 3, Vote: 2}, mkEntries(1, 5, 3))
	s.Close()
	if err := os.RemoveAll(filepath.Join(dir, WALDirName)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, walOptions(testSegmentSize))
	wantCorrupt(t, err, 0, "holds no segment")
}

// The WAL without the bbolt file that names the cluster is refused too.
func TestOpenRefusesWALWithoutBoltFile(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(testSegmentSize))
	mustSave(t, s, &consensus.HardState{Term: 3, Vote: 2}, mkEntries(1, 5, 3))
	s.Close()
	if err := os.Remove(filepath.Join(dir, DBFileName)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, walOptions(testSegmentSize))
	wantCorrupt(t, err, 0, "holds a raft log")
}

// Reference: §5.3. A follower's truncation is a later record that
// replaces a suffix; replay applies records in order, so it wins, also
// when the replaced entries are in an older segment.
func TestWALTruncationSurvivesReplay(t *testing.T) {
	dir := t.TempDir()
	o := walOptions(4096)
	s := openT(t, dir, o)
	for lo := consensus.Index(1); lo <= 60; lo += 10 {
		mustStore(t, s, bigEntries(lo, lo+9, 1, 300))
	}
	if n := len(segmentPaths(t, dir)); n < 4 {
		t.Fatalf("%d segments after 60 entries of 300 bytes in 4 KiB segments, want several", n)
	}
	mustSave(t, s, &consensus.HardState{Term: 2, Vote: 3}, bigEntries(15, 20, 2, 300))
	mustStore(t, s, bigEntries(21, 22, 2, 10))
	want := append(bigEntries(1, 14, 1, 300), bigEntries(15, 20, 2, 300)...)
	want = append(want, bigEntries(21, 22, 2, 10)...)
	checkLog(t, s, want)
	s.Close()
	s = openT(t, dir, o)
	checkLog(t, s, want)
	wantHardState(t, s, consensus.HardState{Term: 2, Vote: 3})
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
}

// A bug this guards against: the hard state written once, in a segment
// later deleted by compaction, is forgotten at the next start (a vote
// forgotten is two leaders in one term). Each segment's header carries
// the hard state and the first index.
func TestWALDeletePrefixKeepsHardStateAndFirstIndex(t *testing.T) {
	dir := t.TempDir()
	o := walOptions(4096)
	s := openT(t, dir, o)
	hs := consensus.HardState{Term: 7, Vote: 2, Commit: 3}
	mustSave(t, s, &hs, bigEntries(1, 3, 7, 300))
	var all []consensus.Entry
	all = append(all, bigEntries(1, 3, 7, 300)...)
	for lo := consensus.Index(4); lo <= 100; lo += 4 {
		ents := bigEntries(lo, lo+3, 7, 300)
		mustStore(t, s, ents)
		all = append(all, ents...)
	}
	before := segmentPaths(t, dir)
	if err := s.DeletePrefix(80); err != nil {
		t.Fatal(err)
	}
	after := segmentPaths(t, dir)
	if len(after) >= len(before) || after[0] == before[0] {
		t.Fatalf("DeletePrefix(80) left segments %d..: %d of %d", len(before)-len(after), len(after), len(before))
	}
	checkLog(t, s, all[80:])
	wantHardState(t, s, hs)
	s.Close()

	s = openT(t, dir, o)
	checkLog(t, s, all[80:])
	wantHardState(t, s, hs)

	// Compacting past the end empties the log; the hard state stays, and
	// a new log may start anywhere.
	if err := s.DeletePrefix(500); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ { // roll over, so that every old segment can go
		mustSave(t, s, &hs, nil)
	}
	if err := s.DeletePrefix(500); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, dir, o)
	checkLog(t, s, nil)
	wantHardState(t, s, hs)
	mustStore(t, s, bigEntries(501, 502, 8, 10))
	s.Close()
	s = openT(t, dir, o)
	checkLog(t, s, bigEntries(501, 502, 8, 10))
	wantHardState(t, s, hs)
}

// Under a steady load with a snapshot (compaction) every so often, the
// WAL's disk use stays bounded: old segments are deleted.
func TestWALDiskUseBoundedWithCompaction(t *testing.T) {
	dir := t.TempDir()
	const seg = 16 << 10
	s := openT(t, dir, walOptions(seg))
	next := consensus.Index(1)
	maxSegs := 0
	for round := 0; round < 300; round++ {
		mustSave(t, s, &consensus.HardState{Term: 1, Vote: 1, Commit: next - 1}, bigEntries(next, next+4, 1, 200))
		next += 5
		if round%20 == 19 {
			// Keep the last 50 entries, as --snapshot-trailing does.
			if err := s.DeletePrefix(next - 51); err != nil {
				t.Fatal(err)
			}
		}
		maxSegs = max(maxSegs, len(segmentPaths(t, dir)))
	}
	// 20 rounds of 5 entries plus the 50 kept are ~36 KiB: 3 segments,
	// plus the one being filled, plus the one prepared (not a segment yet).
	if maxSegs > 5 {
		t.Fatalf("up to %d segments of %d bytes for a live log of at most ~36 KiB: old segments are not deleted", maxSegs, seg)
	}
	// The last compaction (round 299, next 1501) kept 1451 on.
	if first, err := s.FirstIndex(); err != nil || first != 1451 {
		t.Fatalf("FirstIndex() = %d, %v; want 1451", first, err)
	}
}

func TestWALBatchLargerThanASegment(t *testing.T) {
	dir := t.TempDir()
	o := walOptions(4096)
	s := openT(t, dir, o)
	mustStore(t, s, bigEntries(1, 2, 1, 100))
	big := bigEntries(3, 40, 1, 1000) // ~40 KiB in one record
	mustSave(t, s, &consensus.HardState{Term: 1, Commit: 2}, big)
	mustStore(t, s, bigEntries(41, 41, 1, 100))
	segs := segmentPaths(t, dir)
	var sizes []int64
	for _, p := range segs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
	}
	if len(segs) != 2 || sizes[0] != 4096 || sizes[1] <= 4096 || sizes[1]%4096 != 0 {
		t.Fatalf("segments %v, sizes %v: want the big batch in a segment of its own size", segs, sizes)
	}
	want := append(append(bigEntries(1, 2, 1, 100), big...), bigEntries(41, 41, 1, 100)...)
	checkLog(t, s, want)
	s.Close()
	s = openT(t, dir, o)
	checkLog(t, s, want)
}

// tornSetup stores entries 1..10 (two batches) in a fresh WAL store and
// returns the dir and where the second batch's record starts and ends in
// the last segment.
func tornSetup(t *testing.T) (dir, seg string, recStart, recEnd int64) {
	t.Helper()
	dir = t.TempDir()
	s := openT(t, dir, walOptions(64<<10))
	mustSave(t, s, &consensus.HardState{Term: 1, Vote: 1}, mkEntries(1, 5, 1))
	recStart = s.wal.off
	mustSave(t, s, &consensus.HardState{Term: 2, Vote: 1, Commit: 5}, mkEntries(6, 10, 2))
	recEnd = s.wal.off
	s.Close()
	segs := segmentPaths(t, dir)
	return dir, segs[len(segs)-1], recStart, recEnd
}

// afterTorn checks that the store opened with only the first batch and
// its hard state, said so, keeps working, and that the torn bytes are
// gone from the file.
func afterTorn(t *testing.T, dir, seg string, recStart int64) {
	t.Helper()
	var logs logBuffer
	o := walOptions(64 << 10)
	o.Logger = logs.logger()
	s := openT(t, dir, o)
	checkLog(t, s, mkEntries(1, 5, 1))
	wantHardState(t, s, consensus.HardState{Term: 1, Vote: 1})
	if !strings.Contains(logs.String(), "torn write") {
		t.Fatalf("no warning about the torn write: %q", logs.String())
	}
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if !allZero(raw[recStart:]) {
		t.Fatalf("bytes after the last whole record (offset %d) were not cleared", recStart)
	}
	mustSave(t, s, &consensus.HardState{Term: 3, Vote: 2}, mkEntries(6, 6, 3))
	s.Close()
	s = openT(t, dir, walOptions(64<<10))
	checkLog(t, s, append(mkEntries(1, 5, 1), mkEntries(6, 6, 3)...))
	wantHardState(t, s, consensus.HardState{Term: 3, Vote: 2})
}

func TestWALTornTail(t *testing.T) {
	t.Run("second half of the record never written", func(t *testing.T) {
		dir, seg, start, end := tornSetup(t)
		zeroFileRange(t, seg, (start+end)/2, end)
		afterTorn(t, dir, seg, start)
	})
	t.Run("header never written, the rest was", func(t *testing.T) {
		dir, seg, start, _ := tornSetup(t)
		zeroFileRange(t, seg, start, start+recHeaderLen)
		afterTorn(t, dir, seg, start)
	})
	t.Run("garbage after the last record", func(t *testing.T) {
		dir, seg, _, end := tornSetup(t)
		// Both batches were acknowledged; then a third write tore.
		f, err := os.OpenFile(seg, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("\x20\x00\x00\x00garbage that is no record"), end); err != nil {
			t.Fatal(err)
		}
		f.Close()
		var logs logBuffer
		o := walOptions(64 << 10)
		o.Logger = logs.logger()
		s := openT(t, dir, o)
		want := append(mkEntries(1, 5, 1), mkEntries(6, 10, 2)...)
		checkLog(t, s, want)
		wantHardState(t, s, consensus.HardState{Term: 2, Vote: 1, Commit: 5})
		if !strings.Contains(logs.String(), "torn write") {
			t.Fatalf("no warning about the torn write: %q", logs.String())
		}
		mustStore(t, s, mkEntries(11, 11, 2))
		s.Close()
		raw, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), "garbage") {
			t.Fatal("the torn bytes are still in the segment")
		}
		s = openT(t, dir, walOptions(64<<10))
		checkLog(t, s, append(want, mkEntries(11, 11, 2)...))
	})
}

func zeroFileRange(t *testing.T, path string, from, to int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, to-from), from); err != nil {
		t.Fatal(err)
	}
}

// flipByte changes one byte of a file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// multiSegmentStore writes entries 1..60 over several 4 KiB segments and
// returns the dir.
func multiSegmentStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s := openT(t, dir, walOptions(4096))
	for lo := consensus.Index(1); lo <= 60; lo += 5 {
		mustSave(t, s, &consensus.HardState{Term: 1, Vote: 1, Commit: lo - 1}, bigEntries(lo, lo+4, 1, 300))
	}
	s.Close()
	if n := len(segmentPaths(t, dir)); n < 4 {
		t.Fatalf("%d segments, want at least 4", n)
	}
	return dir
}

// offsetOf returns where marker first appears in a file.
func offsetOf(t *testing.T, path, marker string) int64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := strings.Index(string(raw), marker)
	if at < 0 {
		t.Fatalf("%q not in %s", marker, path)
	}
	return int64(at)
}

func TestWALCorruption(t *testing.T) {
	t.Run("flipped byte in an older segment", func(t *testing.T) {
		dir := multiSegmentStore(t)
		seg := segmentPaths(t, dir)[1]
		flipByte(t, seg, offsetOf(t, seg, "entry-")+3)
		_, err := Open(dir, walOptions(4096))
		ce := wantCorrupt(t, err, 0, "fails its checksum")
		if ce.Path != seg {
			t.Fatalf("corruption reported in %s, want %s", ce.Path, seg)
		}
	})
	t.Run("flipped byte mid-log in the last segment", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, walOptions(64<<10))
		for lo := consensus.Index(1); lo <= 30; lo += 10 {
			mustStore(t, s, mkEntries(lo, lo+9, 1))
		}
		s.Close()
		seg := segmentPaths(t, dir)[0]
		// Entry 15 is in the middle record: records follow it, so this is
		// damage, not a torn write, and must not silently drop 11..30.
		flipByte(t, seg, offsetOf(t, seg, "entry-15-")+6)
		_, err := Open(dir, walOptions(64<<10))
		wantCorrupt(t, err, 0, "data follows it (damage, not a torn write)")
	})
	t.Run("damaged length mid-log in the last segment", func(t *testing.T) {
		dir, seg, start, _ := tornSetup(t)
		before := start - 1
		for ; before > 0; before-- { // find the first record after the header
			if _, _, _, st := readRecordAtFile(t, seg, before); st == recOK && before > 0 {
				break
			}
		}
		flipByte(t, seg, before+3) // the high byte of the first batch's length
		_, err := Open(dir, walOptions(64<<10))
		wantCorrupt(t, err, 0, "a damaged record header, and an intact record follows it")
	})
	t.Run("missing middle segment", func(t *testing.T) {
		dir := multiSegmentStore(t)
		if err := os.Remove(segmentPaths(t, dir)[2]); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, walOptions(4096))
		wantCorrupt(t, err, 0, "are missing")
	})
	t.Run("missing oldest segment with live entries", func(t *testing.T) {
		dir := multiSegmentStore(t)
		if err := os.Remove(segmentPaths(t, dir)[0]); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, walOptions(4096))
		wantCorrupt(t, err, 1, "in WAL segments that are gone")
	})
	t.Run("segment header disagrees with the segments before", func(t *testing.T) {
		dir := multiSegmentStore(t)
		segs := segmentPaths(t, dir)
		// Swap in another segment's header: its seq is then wrong.
		raw, err := os.ReadFile(segs[1])
		if err != nil {
			t.Fatal(err)
		}
		other, err := os.ReadFile(segs[2])
		if err != nil {
			t.Fatal(err)
		}
		n := recHeaderLen + segHeaderLen
		copy(raw[:n], other[:n])
		if err := os.WriteFile(segs[1], raw, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = Open(dir, walOptions(4096))
		wantCorrupt(t, err, 0, "segment header says it is segment")
	})
	t.Run("entry checksum bad under an intact record", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, walOptions(64<<10))
		mustStore(t, s, mkEntries(1, 5, 1))
		bad := mkEntries(6, 6, 1)
		// Written around the store's own check, as a bug or bad memory
		// between the check and the write would.
		bad[0].Checksum ^= 1
		rec, _ := appendEntriesRecord(nil, nil, bad, nil)
		if _, err := s.wal.write(rec); err != nil {
			t.Fatal(err)
		}
		s.Close()
		_, err := Open(dir, walOptions(64<<10))
		ce := wantCorrupt(t, err, 6, "checksum")
		var ec *consensus.EntryCorruptError
		if !errors.As(ce, &ec) || ec.Index != 6 {
			t.Fatalf("%v does not wrap the *EntryCorruptError of entry 6", err)
		}
	})
}

func readRecordAtFile(t *testing.T, path string, off int64) (byte, []byte, int, recordStatus) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return readRecord(raw, int(off))
}

// Damage done while the store runs: Entries never returns a bad entry,
// and Verify finds it.
func TestWALDamageWhileOpen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(4096))
	for lo := consensus.Index(1); lo <= 40; lo += 5 {
		mustStore(t, s, bigEntries(lo, lo+4, 1, 300))
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	seg := segmentPaths(t, dir)[0]
	flipByte(t, seg, offsetOf(t, seg, "entry-2-")+8)
	_, err := s.Entries(1, 10)
	var ec *consensus.EntryCorruptError
	if !errors.As(err, &ec) || ec.Index != 2 || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Entries over a damaged entry: %v, want a *CorruptError for entry 2", err)
	}
	if got, err := s.Entries(3, 41); err != nil || len(got) != 38 {
		t.Fatalf("Entries(3, 41) = %d entries, %v", len(got), err)
	}
	wantCorrupt(t, s.Verify(), 0, "fails its checksum")
}

// After a failed write nothing more is written: what reached the disk is
// unknown until a restart replays it.
func TestWALStopsAfterAFailedWrite(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(64<<10))
	mustStore(t, s, mkEntries(1, 3, 1))
	s.wal.cur.Close() // the next write fails
	if err := s.StoreEntries(mkEntries(4, 4, 1)); err == nil {
		t.Fatal("write to a closed segment file succeeded")
	}
	err := s.SetHardState(consensus.HardState{Term: 2})
	if err == nil || !strings.Contains(err.Error(), "restart lockd") {
		t.Fatalf("write after a failed one: %v, want a refusal saying to restart", err)
	}
	checkLog(t, s, mkEntries(1, 3, 1))
	s.Close()
	s = openT(t, dir, walOptions(64<<10))
	checkLog(t, s, mkEntries(1, 3, 1))
	mustStore(t, s, mkEntries(4, 4, 1))
}

// The next segment is prepared in the background; Close must stop that
// work, wait for it and remove its file, whenever it comes. Run with
// -race.
func TestWALCloseDuringPreparation(t *testing.T) {
	before := runtime.NumGoroutine()
	started := 0
	for i := 0; i < 30; i++ {
		dir := t.TempDir()
		// Big segments: preparing one takes long enough to be caught.
		s, err := Open(dir, walOptions(8<<20))
		if err != nil {
			t.Fatal(err)
		}
		// Half full starts the preparation.
		big := bigEntries(1, 1, 1, 4<<20+i*4096)
		mustStore(t, s, big)
		s.wal.mu.Lock()
		if s.wal.prepc != nil {
			started++
		}
		s.wal.mu.Unlock()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if tmp, _ := filepath.Glob(filepath.Join(dir, WALDirName, "*"+tmpSuffix)); len(tmp) != 0 {
			t.Fatalf("Close left %v behind", tmp)
		}
	}
	if started == 0 {
		t.Fatal("no background preparation was ever started: the test exercised nothing")
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after closing, %d before", n, before)
	}
}

// The background preparation hands over its file at the roll-over; a
// store whose preparation is still running rolls over all the same.
func TestWALRollOverUsesPreparedSegment(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(16<<10))
	var all []consensus.Entry
	for lo := consensus.Index(1); lo <= 200; lo += 4 {
		ents := bigEntries(lo, lo+3, 1, 500)
		mustStore(t, s, ents)
		all = append(all, ents...)
	}
	if n := len(segmentPaths(t, dir)); n < 6 {
		t.Fatalf("%d segments, want at least 6", n)
	}
	checkLog(t, s, all)
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
}
