package consensus

import (
	"context"
	"io"
)

// LogStore is the durable Raft log. Implementations: store.Store (a WAL or
// bbolt), and inmem.LogStore for tests.
type LogStore interface {
	// FirstIndex is the index of the first stored entry; LastIndex of the
	// last. Both are 0 for an empty log.
	FirstIndex() (Index, error)
	LastIndex() (Index, error)
	// Entries returns entries [lo, hi), verifying each checksum; a corrupt
	// entry yields an *EntryCorruptError.
	Entries(lo, hi Index) ([]Entry, error)
	// StoreEntries durably stores a contiguous batch in one write: any
	// stored entries from ents[0].Index on are replaced (a follower's
	// truncation on conflict). Durable when it returns.
	StoreEntries(ents []Entry) error
	// DeletePrefix removes entries up to and including index (compaction
	// after a snapshot).
	DeletePrefix(index Index) error
}

// StableStore holds the HardState.
type StableStore interface {
	// HardState returns the stored state, zero if none.
	HardState() (HardState, error)
	// SetHardState stores hs durably before it returns.
	SetHardState(hs HardState) error
}

// BatchStore is implemented by stores that can persist a Ready's entries
// and hard state in one durable write (group commit). Save writes the hard
// state where the same object's StableStore.HardState reads it, so the
// driver uses it only when LogStore and StableStore are one object.
type BatchStore interface {
	Save(hs *HardState, ents []Entry) error
}

// SnapshotMeta describes a snapshot: the last entry it covers and the
// configuration at that point.
type SnapshotMeta struct {
	Index  Index
	Term   Term
	Voters []NodeID
	Size   int64
}

// SnapshotStore keeps state machine snapshots: the node's own (taken when
// the log since the last one passes a threshold) and those received from a
// leader. Implementations: store.FileSnapshotStore, inmem.SnapshotStore.
type SnapshotStore interface {
	// Create starts a snapshot; the sink is committed (durable, and then
	// returned by Latest and Open) by Close and thrown away by Cancel.
	Create(meta SnapshotMeta) (SnapshotSink, error)
	// Latest opens the newest intact snapshot; ok is false if there is none.
	Latest() (meta SnapshotMeta, rc io.ReadCloser, ok bool, err error)
	// Open opens the intact snapshot through index of term, verified; an
	// error if there is none.
	Open(index Index, term Term) (SnapshotMeta, io.ReadCloser, error)
}

// SnapshotSender is implemented by transports that can stream a snapshot
// to a peer (peer.PeerTransport in rpc/peer, inmem.Network's transports). SendSnapshot
// returns once the receiver has durably stored the whole snapshot and
// verified its checksum, or why not.
type SnapshotSender interface {
	SendSnapshot(ctx context.Context, to NodeID, meta SnapshotMeta, r io.Reader) error
}

// SnapshotCapturer is a StateMachine that can take a consistent
// point-in-time copy of its state cheaply. CaptureSnapshot is called on the
// node's loop goroutine between two applies; the function it returns
// writes that copy and runs on another goroutine while applies go on. For
// a StateMachine without it, Snapshot runs on the loop goroutine and
// applies wait until it has written everything.
type SnapshotCapturer interface {
	CaptureSnapshot() (write func(io.Writer) error, err error)
}

// SnapshotSink receives one snapshot's bytes.
type SnapshotSink interface {
	io.WriteCloser
	Cancel() error
}

// Transport carries messages between peers. Send must not block on the
// network: it queues (bounded) and drops when a peer is unreachable; Raft
// retries by itself. Incoming messages are handed to Node.Step.
//
// Send may keep the messages until it has encoded them: the core never
// modifies an entry slice it has handed out (a follower's truncation
// copies into a new array). It must not modify them itself.
type Transport interface {
	Send(msgs []Message)
}

// StateMachine is what the log drives. Apply is called once per committed
// normal entry, in log order, on every node alike; it must be deterministic
// and use only the entry (including Entry.Time), never local clocks or
// randomness. Its return value is the command's result, handed to the
// proposer; it is not an error of consensus.
type StateMachine interface {
	Apply(e Entry) any
	// Snapshot writes the state up to the last applied entry.
	Snapshot(w io.Writer) error
	// Restore replaces the state with a snapshot's.
	Restore(r io.Reader) error
}

// Proposer is the blocking face of a running node, for servers.
type Proposer interface {
	Propose(ctx context.Context, data []byte) (any, error)
}
