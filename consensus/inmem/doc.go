// Package inmem holds in-memory implementations of consensus's edges for
// tests and demos: Store (log, hard state, group commit), SnapshotStore,
// and Network (a Transport between Nodes in one process, with partitions,
// that also streams snapshots to receivers implementing SnapshotReceiver).
//
// Invariants:
//
//  1. Store copies entries and their data in and out: nothing a caller
//     holds aliases stored state, as with a disk.
//  2. Store's log is contiguous: StoreEntries accepts a batch only if it
//     starts inside the log or right after its end (a gap is an error), and
//     replaces every stored entry from its first index on.
//  3. Store.Entries verifies every checksum; corruption surfaces as a
//     *consensus.EntryCorruptError, never as data.
//  4. Network never blocks a sender: each node has one delivering
//     goroutine behind a bounded queue, and a message that finds the queue
//     full, the link cut or the receiver refusing it is dropped, as on a
//     real network. Messages between a pair of nodes arrive in send order.
//  5. A message is copied when sent (its Entries slice, not the immutable
//     entry data), so the sender may reuse its slices at once.
//  6. Close stops and joins every goroutine the Network started.
//  7. A snapshot is visible in a SnapshotStore only once its sink is
//     closed; a transfer that fails (link cut, checksum mismatch) cancels
//     the receiver's sink, so nothing of it is kept.
//
// This package imports only consensus and the standard library; production
// code must never import it.
package inmem
