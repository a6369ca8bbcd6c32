// Package session holds lockd's session and lease rules: the TTL and
// lock-delay ranges (Rules), and the leader-only keepalive deadlines
// (Tracker).
//
// Invariants:
//
//  1. Keepalives are never replicated. Only the leader holds deadlines, in
//     memory; followers forward keepalives to it.
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
// This package imports only the standard library. It must never import
// consensus, fsm, rpc, store, server or client.
package session
