package store

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/lockd/lockd/consensus"
)

// A process killed after a write but before its fdatasync returned
// leaves the write readable from the page cache yet not on disk; the
// next process must not act on it before syncing it. The WAL's own case
// is TestWALOpenSyncsWhatReplayFound; these are raft.db (the whole log
// with --raft-log bolt, the identity otherwise) and the snapshot dir.

func TestReopenedRaftDBIsSyncedBeforeUse(t *testing.T) {
	for _, backend := range []string{RaftLogBolt, RaftLogWAL} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{RaftLog: backend, WALSegmentSize: 64 << 10})
			if err := s.Save(&consensus.HardState{Term: 3, Vote: 2}, nil); err != nil {
				t.Fatal(err)
			}
			s.Close()
			var synced []string
			s2 := openT(t, dir, Options{WALSegmentSize: 64 << 10, openSynced: func(what string) { synced = append(synced, what) }})
			if !slices.Contains(synced, filepath.Join(dir, "raft.db")) || !slices.Contains(synced, dir) {
				t.Fatalf("reopen synced %v; want raft.db and the data dir", synced)
			}
			if hs, err := s2.HardState(); err != nil || hs.Term != 3 || hs.Vote != 2 {
				t.Fatalf("hard state after reopen: %+v, %v", hs, err)
			}
		})
	}
}

func TestSnapshotDirIsSyncedAtOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snapshots")
	s, err := NewFileSnapshotStore(dir, SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := s.Create(consensus.SnapshotMeta{Index: 5, Term: 1, Voters: []consensus.NodeID{1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("state")); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	var synced []string
	if _, err := NewFileSnapshotStore(dir, SnapshotOptions{openSynced: func(what string) { synced = append(synced, what) }}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(synced, dir) {
		t.Fatalf("opening the snapshot store synced %v, not its dir %s", synced, dir)
	}
}
