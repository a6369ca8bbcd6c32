package store

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

// Regression tests from a review of the WAL: each names the scenario that
// lost or could lose a vote or an acknowledged entry, or made a healthy
// store impossible to open.

// preWALFormat is the only store format a lockd from before the WAL
// knows; it refuses any higher one as "newer" and opens format 1 as a
// bbolt log, reading neither the raftlog key nor wal/.
const preWALFormat = 1

// storedFormat reads meta/format from a closed data dir's bbolt file.
func storedFormat(t *testing.T, dir string) uint64 {
	t.Helper()
	var f uint64
	db, err := bolt.Open(filepath.Join(dir, DBFileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		v, ok := keyIndex(tx.Bucket(bucketMeta).Get(keyFormat))
		if !ok {
			t.Fatal("no 8-byte format record")
		}
		f = uint64(v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A lockd from before the WAL (store format 1) opening a WAL data dir
// would find empty "log" and "stable" buckets and start as a new member
// with term 0 and no vote: a vote forgotten, a log lost. It checks only
// the format number, so a WAL dir must carry one it refuses; a bbolt dir
// keeps format 1, which it still opens correctly.
func TestWALDirIsRefusedByALockdFromBeforeTheWAL(t *testing.T) {
	for _, backend := range []string{RaftLogWAL, RaftLogBolt} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{RaftLog: backend, WALSegmentSize: testSegmentSize})
			mustSave(t, s, &consensus.HardState{Term: 4, Vote: 2}, mkEntries(1, 3, 4))
			s.Close()
			f := storedFormat(t, dir)
			if refused := f > preWALFormat; refused != (backend == RaftLogWAL) {
				t.Fatalf("a %s data dir has store format %d: a lockd from before the WAL refuses it: %v", backend, f, refused)
			}
		})
	}
}

// A WAL dir written before the format number told WAL dirs apart (format
// 1 with raftlog "wal") opens as a WAL and is marked with the WAL's
// format from then on.
func TestWALDirWithTheOldFormatNumberIsUpgraded(t *testing.T) {
	dir := t.TempDir()
	o := walOptions(testSegmentSize)
	s := openT(t, dir, o)
	mustSave(t, s, &consensus.HardState{Term: 4, Vote: 2}, mkEntries(1, 3, 4))
	s.Close()
	rewrite(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, indexKey(preWALFormat)) })
	s = openT(t, dir, o)
	if s.RaftLog() != RaftLogWAL {
		t.Fatalf("opened as %s", s.RaftLog())
	}
	checkLog(t, s, mkEntries(1, 3, 4))
	wantHardState(t, s, consensus.HardState{Term: 4, Vote: 2})
	s.Close()
	if f := storedFormat(t, dir); f <= preWALFormat {
		t.Fatalf("format still %d after opening a WAL dir", f)
	}
}

// A format that says WAL with a backend record that says otherwise is a
// damaged meta bucket, not a bbolt log to open.
func TestWALFormatWithABoltBackendRecordIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(testSegmentSize))
	mustSave(t, s, &consensus.HardState{Term: 4, Vote: 2}, mkEntries(1, 3, 4))
	s.Close()
	rewrite(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyRaftLog, []byte(RaftLogBolt)) })
	_, err := Open(dir, Options{})
	wantCorrupt(t, err, 0, "format")
}

// DeletePrefix removes old segments oldest first. Unlinks in one
// directory reach the disk in no promised order unless the directory is
// synced between them: a power loss could keep segment 1 and lose 2,
// and Open refuses a gap in the numbering, so the member could not start
// again. The dir must be synced after each delete.
func TestWALDeletingSegmentsSyncsTheDirAfterEach(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(4096))
	for lo := consensus.Index(1); lo <= 60; lo += 5 {
		mustStore(t, s, bigEntries(lo, lo+4, 1, 300))
	}
	before := len(segmentPaths(t, dir))
	if before < 5 {
		t.Fatalf("%d segments, want at least 5", before)
	}
	// Each dir sync sees how many segments are gone since the one before.
	onDisk, maxGone, syncs := before, 0, 0
	s.wal.mu.Lock()
	s.wal.syncDir = func(d string) error {
		n := len(segmentPaths(t, dir))
		maxGone = max(maxGone, onDisk-n)
		onDisk, syncs = n, syncs+1
		return syncDir(d)
	}
	s.wal.mu.Unlock()
	if err := s.DeletePrefix(55); err != nil {
		t.Fatal(err)
	}
	if gone := before - len(segmentPaths(t, dir)); gone < 2 {
		t.Fatalf("DeletePrefix(55) deleted %d segments, want several (the test needs at least 2)", gone)
	}
	if onDisk != len(segmentPaths(t, dir)) {
		t.Fatalf("the dir was not synced after the last delete (%d segments at the last sync, %d now)", onDisk, len(segmentPaths(t, dir)))
	}
	if maxGone > 1 {
		t.Fatalf("%d segments deleted between two dir syncs (%d syncs): a power loss can leave a gap", maxGone, syncs)
	}
	checkLog(t, s, bigEntries(56, 60, 1, 300))
}

// A segment header with impossible bounds (a first index with no last,
// or after it) passes its CRC only if written so; replay must refuse it
// rather than hand the node a log whose first index is past its last.
func TestWALSegmentHeaderWithImpossibleBoundsIsRefused(t *testing.T) {
	for _, c := range []struct{ first, last consensus.Index }{{10, 5}, {0, 5}, {3, 0}} {
		b := appendSegHeader(nil, segHeader{seq: 1, first: c.first, last: c.last})
		b = append(b, make([]byte, 64)...)
		_, err := replaySegments("wal", []uint64{1}, func(string) ([]byte, error) { return b, nil }, false)
		if err == nil || !strings.Contains(err.Error(), "segment header") {
			t.Errorf("header with log [%d, %d]: replay gave %v, want a corrupt segment header", c.first, c.last, err)
		}
	}
}

// A data dir whose raft.db was lost but whose wal/ holds a log and a vote
// must not start afresh as a bbolt store either (--raft-log bolt): that
// forgets the vote just as an empty WAL would.
func TestNewBoltFileNextToAWALWithALogIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(testSegmentSize))
	mustSave(t, s, &consensus.HardState{Term: 3, Vote: 2}, mkEntries(1, 5, 3))
	s.Close()
	if err := os.Remove(filepath.Join(dir, DBFileName)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 0, "holds a raft log")
}

// Replay reads the page cache. A process killed after a write but before
// its fdatasync returned leaves a record that the next process replays
// and acts on (it tells the leader the entries are stored, keeps the
// vote) although no disk may hold it: a power loss then takes away an
// acknowledged entry or a vote. Open must sync the last segment (and the
// dir, for a roll-over killed before its dir sync) before returning.
func TestWALOpenSyncsWhatReplayFound(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, walOptions(4096))
	for lo := consensus.Index(1); lo <= 20; lo += 5 {
		mustSave(t, s, &consensus.HardState{Term: 2, Vote: 1}, bigEntries(lo, lo+4, 2, 300))
	}
	segs := segmentPaths(t, dir)
	if len(segs) < 2 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	s.Close()
	wdir := filepath.Join(dir, WALDirName)
	w := newWAL(wdir, 4096, hclog.NewNullLogger())
	var filesSynced []string
	dirSynced := false
	w.syncFile = func(f *os.File) error {
		filesSynced = append(filesSynced, f.Name())
		return fdatasync(f)
	}
	w.syncDir = func(d string) error {
		dirSynced = dirSynced || d == wdir
		return syncDir(d)
	}
	if err := w.open(false); err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if !slices.Contains(filesSynced, segs[len(segs)-1]) {
		t.Fatalf("open synced %v, not the last segment %s, whose records it replayed", filesSynced, segs[len(segs)-1])
	}
	if !dirSynced {
		t.Fatal("open did not sync the WAL dir, whose newest segment may be named only in the page cache")
	}
	if w.idx.last != 20 || w.hs != (consensus.HardState{Term: 2, Vote: 1}) {
		t.Fatalf("replayed log to %d with hard state %+v", w.idx.last, w.hs)
	}
}

// Segments are zero-filled to their full size and synced before they get
// their name, and no write extends one: a crash never leaves a segment
// shorter than its records. A last segment cut short mid-record was
// truncated after its records were acknowledged; dropping them as a torn
// write would lose acknowledged entries without stopping the member.
func TestWALLastSegmentCutShortIsRefused(t *testing.T) {
	dir, seg, start, end := tornSetup(t)
	if err := os.Truncate(seg, (start+end)/2); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, walOptions(64<<10))
	wantCorrupt(t, err, 0, "the file was truncated")
}
