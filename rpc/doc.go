// Package rpc is lockd's wire protocol: length-prefixed msgpack frames over
// TCP (optionally TLS), multiplexed unary calls, one-way notifications and
// flow-controlled streams. The Raft peer transport that carries consensus
// messages and snapshots over it is package rpc/peer; rpc itself knows
// nothing of Raft, so the client library does not depend on consensus.
//
// # Frames
//
// Every frame is a 16-byte header (body length, frame type, flags, method,
// call or stream id; see Header) and a msgpack body. A connection opens
// with a handshake: the client's Hello carries a magic string, the range of
// protocol versions it speaks, the cluster id and its limits; the server
// answers HelloAck (the version chosen and its own limits) or an Error
// frame saying why it refuses, and logs the refusal. Requests carry the
// time left until the caller's deadline, so the handler's context expires
// with the caller's; a Cancel frame cancels it early.
//
// # Invariants
//
//  1. Input from the network never panics the process and never makes it
//     allocate more than the frame limit per frame: a header is checked
//     before its body is read, large bodies are read as they arrive, and
//     msgpack decoding is bounded (MaxInitLen, MaxDepth) with panics caught.
//  2. A framing error (unknown frame type, bad header, oversized, truncated
//     or undecodable frame) gets a connection-level Error frame and closes
//     that connection only; a request error (unknown method, handler error,
//     too many calls) is answered and the connection stays.
//  3. Every connection has exactly one reader goroutine, which never waits
//     on a slow consumer: responses go to buffered channels, stream
//     messages to a queue whose capacity is the window the peer was given;
//     a peer that sends beyond its credit breaks the protocol.
//  4. Everything queued is bounded: writes (WriteQueueBytes, then senders
//     wait), calls per connection (MaxConcurrentCalls), connections
//     (MaxConns) and stream messages (StreamWindow).
//  5. Every pending call ends exactly once: with its answer, its context's
//     error (after a Cancel frame is sent), or the connection's death.
//  6. Decoded values never alias a read buffer: bodies are decoded into
//     fresh values, and stream messages are copied out of the reader.
//  7. Errors cross the wire as (code, message); an ErrorTable maps codes to
//     sentinels on both sides, so errors.Is works for the caller.
//  8. Every goroutine is joined by Close (Server, Client).
//
// # Flow control
//
// Unary calls: a client never has more calls in flight on a connection
// than the server's MaxConcurrentCalls (it learns the number in the
// handshake and waits for a slot); a client that ignores it is answered
// ErrOverloaded. Writes go through a per-connection queue of at most
// WriteQueueBytes; past it, writers wait (the peer's TCP window is the
// ultimate brake) and a write that makes no progress for WriteTimeout
// kills the connection.
//
// Streams: each side announces a window W (messages) in the handshake. A
// sender starts with W credits, spends one per message and waits when it
// has none; the receiver queues at most W messages and grants credit back
// (a Credit frame) each time its application has consumed W/2 of them. A
// slow reader therefore stops its sender; nothing buffers without bound.
//
// # Goroutines
//
// Server: one accept loop per listener; per connection a reader (which
// owns the connection's life) and a flusher; handler workers, reused
// across calls and bounded by the calls in progress; an idle timer.
// Client: per connection a reader and a flusher. Close joins them all.
//
// # What rpc exports for rpc/peer
//
// The peer transport builds on the public API plus a few pieces exported
// for it: the reserved method numbers (MethodRaftMessages,
// MethodRaftSnapshot; FirstUserMethod is the first one free for others),
// NewHandle and SafeEncode with Client.NotifyEncoded (a lane encodes its
// batch once, with its own long-lived encoder, and sends the bytes), and
// BodyChecker (a batch's message count is checked before it is decoded).
//
// This package imports only go-msgpack, hclog and the standard library; it
// must never import consensus, server, fsm or store (client imports rpc,
// and must not depend on the Raft core).
package rpc
