// Package store is lockd's durable storage: the Raft log and hard state
// (in an append-only segmented WAL, or for data dirs created before it in
// bbolt), the cluster identity (bbolt), and state machine snapshots as
// files (FileSnapshotStore). Open returns one *Store that is the node's
// LogStore, StableStore and BatchStore.
//
// A data dir holds:
//
//	LOCK        flock'd by the one process using the dir; holds its pid
//	raft.db     bbolt: buckets "stable" (cluster identity; the hard state
//	            with the bolt backend), "log" (entries, bolt backend only)
//	            and "meta" (format version: 2 for a WAL dir, which a lockd
//	            from before the WAL refuses, 1 for a bbolt dir; and which
//	            raft log backend the dir uses: "wal", or "bolt" / absent
//	            for dirs from before)
//	wal/        WAL backend: segments 0000000000000001.wal, ... (see wal.go)
//	snapshots/  one file per snapshot, by convention (FileSnapshotStore
//	            takes any dir)
//
// Invariants (both backends unless said):
//
//  1. One process per data dir: Open takes an exclusive, non-blocking flock
//     on LOCK and fails at once, naming the dir and the holder's pid, when
//     another holds it. The lock is held until Close.
//  2. Durable before used: Open of a WAL fdatasyncs the last segment and
//     fsyncs the WAL dir after replaying them, since replay reads the page
//     cache, which may hold a write whose process died before its sync.
//     Durable on return: StoreEntries, Save, SetHardState, SetIdentity and
//     DeletePrefix return only once what they wrote is on disk. bbolt: its
//     transaction committed (fdatasync of the data pages, then of the meta
//     page). WAL: the record written with one write call and then
//     fdatasynced; after a failed write or sync the WAL refuses every
//     further write until a restart replays it. No option that weakens this
//     (NoSync, skipping a sync) is used or offered.
//  3. One write, all or nothing: a batch of entries, and with Save the hard
//     state too, is one bbolt transaction, or one WAL record (the record's
//     CRC makes a torn one invalid), so after a crash it is there entirely
//     or not at all. A WAL segment gets its final name only once its header
//     and first record are synced (temp file, fdatasync, rename, dir fsync).
//  4. The log is contiguous: there is no gap between the first and last
//     index. A batch must be contiguous and start inside the log or right
//     after its end (any start if the log is empty); it replaces every
//     stored entry from its first index on (WAL: a later record overrides
//     an earlier one at replay, which applies records in order). A batch
//     that would break this is refused before anything changes.
//  5. Nothing corrupt is returned: every entry read is decoded, its index
//     checked and its CRC-32C verified; the hard state and identity carry
//     their own CRC (WAL: every record has a CRC of its header and one of
//     its payload). Open scans the whole log and the stable records (bbolt:
//     through a read-only handle first, before bbolt opens the file for
//     writing, whose open walks every page in a goroutine where a corrupt
//     offset would be an unrecoverable fault; WAL: every segment in order)
//     and refuses to open a store that fails: a *CorruptError saying what,
//     where, and how to recover. Entries are also verified before they are
//     written, and a batch whose terms go down is refused.
//     WAL only: a gap in the segment numbers, a segment header that does
//     not match the segments before it, entries whose segment is gone, or
//     a segment cut short mid-record (segments are preallocated; a crash
//     never shortens one) are corruption too. Every segment header but
//     the oldest left is checked against the end of the segment before
//     it: the offset where its records end, the term of the log's last
//     entry, and a CRC-32C chained over the header CRCs of every record
//     before it (etcd chains its WAL the same way). A record lost from
//     the end of a segment that is not the last (zeros where an
//     acknowledged record was) is therefore corruption, also when it
//     changed neither the log's bounds nor the hard state. A segment of
//     another WAL format version is refused, never read as this one. The
//     one exception is the end of the last segment: an invalid record there that nothing valid follows is a
//     write that was torn by a crash (it was never acknowledged); it ends
//     the log, and Open zeroes it (and logs a warning) before anything is
//     appended, so that no stale, valid-looking record can ever be found
//     after a newer one. A damaged last record cannot be told from a torn
//     one and is dropped the same way (as in etcd).
//  6. (WAL) Compaction never loses the hard state or the first index: every
//     segment starts with a header holding both (and the last index) as
//     they were when it began, so DeletePrefix can delete whole old
//     segments (never the current one), oldest first with a dir fsync
//     after each, once the record of the new first index is durable. Segment files are never reused: a new segment is a
//     new file, zero-filled and synced before its first use, so appends
//     change neither its size nor its extents and each costs one device
//     flush.
//  7. (bbolt) No silent rollback: bbolt falls back to its older meta page when the
//     newer is damaged, dropping the last committed transaction without a
//     word. Open first checks that both meta pages are intact and one
//     transaction apart, and refuses the file otherwise.
//  8. Nothing returned aliases a buffer: bbolt values are decoded (copied)
//     inside the read transaction; WAL entries are read with pread into a
//     fresh buffer and each entry's data copied out of it.
//  9. A snapshot is visible under its final name only once complete: it is
//     written to a temp file, fsynced, renamed, and the directory fsynced.
//     Latest verifies a snapshot's metadata and CRC over all its bytes
//     before handing it out, skips (and logs) any snapshot that fails, and
//     its reader verifies the CRC again as the bytes are read.
//
// Background work: the WAL prepares its next segment in one goroutine at
// a time; Close cancels it, waits for it and removes its file.
//
// This package may import consensus (for its interfaces and types), bbolt,
// go-msgpack, hclog and the standard library. It must never import rpc,
// fsm, session, server, client, cmd, or consensus/inmem (test support).
package store
