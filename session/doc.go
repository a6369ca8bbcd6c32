// Package session holds lockd's session and lease rules: the TTL and
// lock-delay ranges (Rules), and the leader-only keepalive deadlines
// (Tracker).
//
// Invariants:
//
//  1. Keepalives are not replicated one by one. Only the leader holds
//     deadlines, in memory; followers forward keepalives to it. Batched
//     checkpoints carry through the log the deadline a keepalive earned
//     (ExpiresAt), when it moved more than TTL/6 past the replicated one.
//  2. A new leader never expires a live session because of the failover:
//     every deadline starts at least Grace after promotion, and never
//     earlier than the session's replicated checkpoint (ExpiresAt).
//  3. A dead session cannot live forever when leaders change often: the
//     replicated ExpiresAt only moves when a leader checkpoints a keepalive
//     it actually received, so each new leader's deadline is at most
//     max(ExpiresAt, promotion + Grace).
//  4. A stalled leader does not expire sessions whose keepalives it could
//     not process: time that passed while the tracker was not observed
//     (a pause, a slow fsync) is added back to every deadline.
//  5. Rules never clamp silently: a TTL or lock-delay outside its range is
//     an error naming the range.
//
// The caller (the server's leader loop) must: call Observe, Expired and
// Checkpoints every tick, from the goroutine that handles keepalives, and
// arm a timer at NextDeadline; confirm leadership (a ReadIndex round)
// before proposing expiries; Promote once the new leader's no-op has been
// applied, and report every create, end and checkpoint applied after that.
// Clients must retry a failed keepalive within Grace: a client whose
// keepalives are all lost for a whole TTL looks exactly like a dead one.
//
// This package imports only the standard library. It must never import
// consensus, fsm, rpc, store, server or client.
package session
