// Package consensus is lockd's Raft: a pure, deterministic core (Raft) and
// the driver (Node) that runs it against real storage, a transport and a
// state machine.
//
// The core has no goroutines, clocks, disks or sockets. Time enters as
// Tick, peer messages as Step, client work as Propose, ReadIndex and
// TransferLeadership; everything the core wants done comes out of Ready and
// is acknowledged with Advance.
//
// Invariants the core keeps (and the simulation in this package's tests
// checks after every step):
//
//  1. Election Safety: at most one leader per term. A node votes at most
//     once per term and the vote is durable before the answer leaves.
//
//  2. Leader Append-Only: a leader never overwrites or deletes its entries.
//
//  3. Log Matching: two logs with an entry of the same index and term are
//     identical up to it.
//
//  4. Leader Completeness: a committed entry is in the log of every later
//     leader; only entries of the leader's current term commit by counting
//     replicas (Figure 8), and every leader starts its term with a no-op.
//
//  5. State Machine Safety: every node applies the same entry at each index.
//     A follower commits at most the last entry the leader verified in the
//     message that carried the commit index.
//
//  6. Snapshots hold only committed state: a node snapshots what it has
//     applied, compacts no further than what is applied and durable, and
//     installs a received snapshot only as a follower and only if it is
//     ahead of its commit index (which therefore never goes back).
//
//  7. Membership changes one server at a time (§4.1): a node uses the
//     latest configuration in its log, committed or not; a leader starts a
//     change only when its previous configuration entry is committed and
//     it has committed an entry of its own term. Learners receive the log
//     but never vote, campaign or count toward commit, CheckQuorum or
//     ReadIndex. Member ids are never reused (Configuration.NextID).
//
// Messages in Ready.Messages may leave before the Ready is durable (the
// leader's appends: it replicates in parallel with its own fsync, counting
// itself toward commit only once durable; a follower's heartbeat answers
// once its term is durable). Ready.MessagesAfterPersist vouch for state in
// that Ready (votes, acknowledgements) and must wait.
//
// Writes may be asynchronous (AdvanceAsync, then Persisted): at most one
// is in flight, and until it is durable Ready hands out no new entries,
// hard state, MessagesAfterPersist or received snapshot, so writes reach
// the disk in order and everything that vouches for one leaves after it.
// A snapshot is accepted only with no write or acknowledgement in flight
// (one acknowledging entries after it would otherwise outlive them). The
// Node driver writes on a writer goroutine by default, so a slow or stalled
// fsync does not stop its ticks, appends, commits and reads
// (NodeConfig.SyncPersist turns that off).
//
// This package imports only the standard library and hclog; it must never
// import store, rpc, fsm, server or any package above them.
package consensus
