package store

import (
	"strings"
	"testing"

	"github.com/lockd/lockd/consensus"
)

// Regression tests from a review of the WAL: each names the scenario that
// lost or could lose a vote or an acknowledged entry, or made a healthy
// store impossible to open.

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
