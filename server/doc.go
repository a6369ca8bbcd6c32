// Package server is a lockd node: it runs the Raft node (consensus) over
// the peer transport (rpc/peer) and durable stores, drives the state machine
// (fsm), serves the client API, forwards what needs the leader, and
// carries out the leader's session duties (session.Tracker).
//
// Invariants:
//
//  1. Any node accepts any call. Writes and keepalives are forwarded once,
//     over the peer listener, to the leader (a batch keepalive as one
//     call); a forwarded call that finds no leader fails with
//     api.ErrUnavailable instead of bouncing on. During an election a call
//     waits up to LeaderWait for a leader.
//  2. A write is answered with the result of its apply. Reads are
//     linearizable (a ReadIndex round, then the node waits until it has
//     applied that far) unless the caller asks for a stale read, which is
//     answered at once with the applied index and the leader-contact age.
//  3. Only the leader holds keepalive deadlines. It takes the sessions
//     over once its first ReadIndex shows it has applied every earlier
//     entry, confirms leadership again before proposing an expiry, and
//     answers a keepalive (a whole batch at once) only after confirming
//     leadership (ReadIndex), so a leader cut off from the majority never
//     acknowledges one that the next leader would not know of.
//  4. A blocking acquire waits on the serving node's own applier, so it
//     survives leader changes; when it gives up, the wait is withdrawn
//     through the log, which also releases a grant that raced it.
//  5. The applier runs on the Raft loop: in-memory work only, channels of
//     capacity one, never a blocking send.
//
// This package may import every other lockd package except cmd; nothing
// imports it but cmd/lockd and tests.
package server
