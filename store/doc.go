// Package store is lockd's durable storage: the Raft log and hard state in
// one bbolt file (BoltStore), and state machine snapshots as files
// (FileSnapshotStore).
//
// A data dir holds:
//
//	LOCK        flock'd by the one process using the dir; holds its pid
//	raft.db     bbolt: buckets "log" (entries), "stable" (hard state,
//	            cluster identity) and "meta" (format version)
//	snapshots/  one file per snapshot, by convention (FileSnapshotStore
//	            takes any dir)
//
// Invariants:
//
//  1. One process per data dir: Open takes an exclusive, non-blocking flock
//     on LOCK and fails at once, naming the dir and the holder's pid, when
//     another holds it. The lock is held until Close.
//  2. Durable on return: StoreEntries, Save, SetHardState, SetIdentity and
//     DeletePrefix return only after their bbolt transaction has committed,
//     which fdatasyncs the data pages and then the meta page. No option that
//     weakens this (NoSync, skipping the ordering fsync) is used or offered.
//  3. One write, one transaction: a batch of entries, and with Save the hard
//     state too, is committed in a single bbolt transaction, so after a crash
//     it is there entirely or not at all.
//  4. The log is contiguous: log keys are big-endian uint64 indexes with no
//     gap between the first and last. A batch must be contiguous and start
//     inside the log or right after its end (any start if the log is
//     empty); it replaces every stored entry from its first index on. A
//     batch that would break this is refused before anything changes.
//  5. Nothing corrupt is returned: every entry read is decoded, its key
//     checked against its index and its CRC-32C verified; the stable
//     records carry their own CRC. Open scans the whole log and the stable
//     records, through a read-only bbolt handle and before bbolt opens the
//     file for writing (whose open walks every page in a goroutine where a
//     corrupt offset would be an unrecoverable fault), and refuses to open
//     a store that fails: a *CorruptError saying what, where, and how to
//     recover. Entries are also verified before they are written, and a
//     batch whose terms go down is refused.
//  6. No silent rollback: bbolt falls back to its older meta page when the
//     newer is damaged, dropping the last committed transaction without a
//     word. Open first checks that both meta pages are intact and one
//     transaction apart, and refuses the file otherwise.
//  7. Nothing returned aliases the bbolt mmap: values are decoded (copied)
//     inside the read transaction.
//  8. A snapshot is visible under its final name only once complete: it is
//     written to a temp file, fsynced, renamed, and the directory fsynced.
//     Latest verifies a snapshot's metadata and CRC over all its bytes
//     before handing it out, skips (and logs) any snapshot that fails, and
//     its reader verifies the CRC again as the bytes are read.
//
// This package may import consensus (for its interfaces and types), bbolt,
// go-msgpack, hclog and the standard library. It must never import rpc,
// fsm, session, server, client, cmd, or consensus/inmem (test support).
package store
