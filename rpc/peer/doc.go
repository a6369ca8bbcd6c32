// Package peer is the Raft peer transport: PeerTransport implements
// consensus.Transport over package rpc, carrying Raft messages and
// snapshots between lockd nodes. It serves rpc.MethodRaftMessages and
// rpc.MethodRaftSnapshot on the rpc.Server given to Register.
//
// # Lanes
//
// Each peer gets two lanes, each with its own bounded queue, goroutine and
// TCP connection: the bulk lane carries MsgApp, the priority lane
// everything else (heartbeats, votes, pre-votes, TimeoutNow, responses,
// ReadIndex). A heartbeat never waits behind megabytes of appends in a
// socket buffer. A lane goroutine takes everything queued (up to
// MaxBatchBytes) and sends it as one one-way frame; the receiver decodes
// and checks it at the gateway (types, addressing, contiguity, every
// entry's checksum) and steps each message, in order, on the connection's
// reader goroutine. Snapshots stream in chunks over a third connection,
// ending with a trailer (size and CRC-32C); the receiving sink is
// committed only if both match, and cancelled otherwise.
//
// # Invariants
//
//  1. Send never blocks: each peer's lanes have bounded queues
//     (QueueSize); a message that does not fit, or has no peer address or
//     connection, is dropped and counted (Stats). Raft retries.
//  2. Messages to one peer and lane leave in the order Send got them, and
//     the receiver hands them to its handler in arrival order.
//  3. Nothing from the network reaches the handler unchecked: a batch's
//     message count is bounded before it is decoded (rpc.BodyChecker),
//     and each message must have a known type (never the local
//     MsgUnreachable), name this node as its receiver and the connection's
//     node as its sender, and carry entries only on MsgApp, each with an
//     intact checksum at its index. A rejected message is counted and
//     logged (rate-limited), and the connection stays.
//  4. A snapshot sink is committed only when the bytes received match the
//     announced size and the trailer's size and CRC-32C; on any failure it
//     is cancelled.
//  5. When an incoming connection that carried messages closes, the
//     handler gets a local MsgUnreachable from its sender.
//  6. Close joins every goroutine the transport started (one per peer and
//     lane); incoming messages stop with the rpc.Server.
//
// The wire format (msgpack arrays, the entry block) is in transport_wire.go;
// fields may only be appended, and a change of meaning needs a new
// protocol version.
//
// This package imports consensus, rpc, go-msgpack, hclog and the standard
// library; it must never import server, fsm or store. Only servers import
// it: client and cmd/lockctl must not depend on it.
package peer
