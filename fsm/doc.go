// Package fsm is lockd's replicated state machine: sessions, locks (with
// waiters, fencing tokens and lock-delay) and config keys (with revisions,
// transactions and a bounded watch history).
//
// Invariants:
//
//  1. Deterministic: the outcome of Apply depends only on the state and the
//     entry (index, time, command). The fsm never reads a clock; time is
//     the entry's, made monotonic. Maps are iterated in sorted order
//     wherever the order can show.
//  2. Mutual exclusion: a lock never has two exclusive holders, never an
//     exclusive holder next to others, never more semaphore holders than
//     the limit; waiters are granted strictly in FIFO order.
//  3. Fencing tokens strictly increase over the cluster's lifetime (a token
//     is the granting entry's index, or the last token + 1 if larger).
//  4. Ending a session (destroy or expiry) releases its locks, drops its
//     waits and deletes its ephemeral keys in the same apply; only an
//     expiry puts its locks into lock-delay. A grant is only ever made to a
//     live session.
//  5. A release or cancel must name the current grant or wait: a late retry
//     of an old one cannot release a newer grant.
//  6. Exactly-once: a repeated (client, sequence) returns the remembered
//     result without applying again.
//  7. Snapshot then Restore gives an identical state; two replicas that
//     applied the same entries write byte-identical snapshots.
//
// This package imports api, session and msgpack; it must never import
// consensus, rpc, store, server or client (the server adapts it to
// consensus.StateMachine).
package fsm
