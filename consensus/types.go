package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Term is a Raft term number. Terms only grow.
type Term uint64

// Index is a position in the replicated log. The first entry has index 1;
// index 0 means "no entry".
type Index uint64

// NodeID names a cluster member. 0 means "nobody" (no vote, no known leader).
type NodeID uint64

// None is the NodeID of nobody.
const None NodeID = 0

// EntryType says how an entry is interpreted.
type EntryType uint8

const (
	// EntryNormal carries a command for the state machine.
	EntryNormal EntryType = iota
	// EntryNoop is appended by every new leader at the start of its term
	// (paper §8, dissertation §6.4): committing it commits everything before
	// it, which is the only way entries of older terms ever commit.
	EntryNoop
	// EntryConfig carries a cluster configuration. Reserved for membership
	// changes; the core treats it as opaque today.
	EntryConfig
)

func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "normal"
	case EntryNoop:
		return "noop"
	case EntryConfig:
		return "config"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one record of the replicated log.
type Entry struct {
	Index Index
	Term  Term
	Type  EntryType
	// Time is the proposing leader's wall-clock time in Unix nanoseconds.
	// State machines must use it instead of their own clock so that every
	// replica decides alike (session expiry, lock-delay).
	Time int64
	Data []byte
	// Checksum is CRC-32C over every other field; see ComputeChecksum.
	Checksum uint32
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ComputeChecksum returns the CRC-32C of the entry's index, term, type, time
// and data.
func (e *Entry) ComputeChecksum() uint32 {
	var hdr [25]byte
	binary.BigEndian.PutUint64(hdr[0:], uint64(e.Index))
	binary.BigEndian.PutUint64(hdr[8:], uint64(e.Term))
	hdr[16] = byte(e.Type)
	binary.BigEndian.PutUint64(hdr[17:], uint64(e.Time))
	return crc32.Update(crcHeader(hdr), crcTable, e.Data)
}

// crcHeader is crc32.Update(0, crcTable, hdr[:]) written out, because
// passing the array to crc32.Update makes it escape: one allocation per
// entry on the hot path.
func crcHeader(hdr [25]byte) uint32 {
	crc := ^uint32(0)
	for _, b := range hdr {
		crc = crcTable[byte(crc)^b] ^ (crc >> 8)
	}
	return ^crc
}

// Seal sets the entry's checksum.
func (e *Entry) Seal() { e.Checksum = e.ComputeChecksum() }

// Verify reports an *EntryCorruptError if the checksum does not match.
func (e *Entry) Verify() error {
	if got := e.ComputeChecksum(); got != e.Checksum {
		return &EntryCorruptError{Index: e.Index, Term: e.Term, Want: e.Checksum, Got: got}
	}
	return nil
}

// Size is an estimate of the entry's encoded size, used for batching limits.
func (e *Entry) Size() int { return len(e.Data) + 40 }

// EntryCorruptError says an entry failed its checksum.
type EntryCorruptError struct {
	Index     Index
	Term      Term
	Want, Got uint32
}

func (e *EntryCorruptError) Error() string {
	return fmt.Sprintf("log entry %d (term %d) is corrupt: checksum %08x, computed %08x", e.Index, e.Term, e.Want, e.Got)
}

// MessageType says what a Message is.
type MessageType uint8

const (
	// MsgApp is AppendEntries: the leader sends entries after (PrevIndex, PrevTerm).
	MsgApp MessageType = iota + 1
	// MsgAppResp answers MsgApp. On success Index is the last index the
	// follower verified; on Reject, RejectIndex is the PrevIndex that failed
	// and ConflictTerm/ConflictIndex drive fast back-tracking.
	MsgAppResp
	// MsgVote is RequestVote.
	MsgVote
	MsgVoteResp
	// MsgPreVote asks "would you vote for me at Term?" without anyone
	// changing term (dissertation §9.6).
	MsgPreVote
	MsgPreVoteResp
	// MsgHeartbeat carries the leader's commit index (capped at the
	// follower's match) and a read-confirmation round in Context.
	MsgHeartbeat
	MsgHeartbeatResp
	// MsgTimeoutNow tells the target of a leadership transfer to start an
	// election at once (dissertation §3.10).
	MsgTimeoutNow
	// MsgReadIndex is a follower asking the leader for a read index; Context
	// is the follower's request id.
	MsgReadIndex
	// MsgReadIndexResp carries the read index (Index) for request Context;
	// Reject means the leader could not serve it.
	MsgReadIndexResp
	// MsgUnreachable is local, never sent between peers: the driver tells
	// the core that its connection from From closed (the process behind
	// it likely died). Term is ignored. See Raft.peerUnreachable.
	MsgUnreachable
)

var msgNames = map[MessageType]string{
	MsgApp: "MsgApp", MsgAppResp: "MsgAppResp", MsgVote: "MsgVote", MsgVoteResp: "MsgVoteResp",
	MsgPreVote: "MsgPreVote", MsgPreVoteResp: "MsgPreVoteResp", MsgHeartbeat: "MsgHeartbeat",
	MsgHeartbeatResp: "MsgHeartbeatResp", MsgTimeoutNow: "MsgTimeoutNow",
	MsgReadIndex: "MsgReadIndex", MsgReadIndexResp: "MsgReadIndexResp", MsgUnreachable: "MsgUnreachable",
}

func (t MessageType) String() string {
	if s, ok := msgNames[t]; ok {
		return s
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Message is every message Raft peers exchange. Fields unused by a type are
// zero. The core keeps the Entries' Data of an incoming MsgApp in its log,
// so a transport must decode into fresh buffers, never reuse them.
type Message struct {
	Type MessageType
	From NodeID
	To   NodeID
	Term Term

	// MsgApp: the entries follow (PrevIndex, PrevTerm). MsgVote/MsgPreVote:
	// the candidate's last log index and term.
	PrevIndex Index
	PrevTerm  Term
	Entries   []Entry
	// Commit is the leader's commit index (MsgApp, MsgHeartbeat).
	Commit Index

	// Index: MsgAppResp success — last index verified; MsgReadIndexResp — the read index.
	Index Index
	// Reject marks a refusal (append, vote, read index).
	Reject bool
	// RejectIndex is the PrevIndex of the MsgApp being refused, so the leader
	// can tell a stale refusal from a current one.
	RejectIndex Index
	// ConflictTerm is the follower's term at RejectIndex (0 if its log is
	// shorter); ConflictIndex is the first index of ConflictTerm in its log,
	// or its last index + 1 when its log is shorter.
	ConflictTerm  Term
	ConflictIndex Index

	// Context: read round (MsgHeartbeat/Resp), request id (MsgReadIndex/Resp),
	// 1 for a vote requested by a leadership transfer.
	Context uint64
}

// HardState is what must be durable before a node answers any message that
// depends on it: currentTerm, votedFor, and (as a convenience for restart)
// the commit index.
type HardState struct {
	Term   Term
	Vote   NodeID
	Commit Index
}

// IsEmpty reports whether hs is the zero value.
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// Role is a node's part in the protocol.
type Role uint8

const (
	Follower Role = iota
	PreCandidate
	Candidate
	Leader
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case PreCandidate:
		return "pre-candidate"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// SoftState is volatile status the driver may want to report.
type SoftState struct {
	Lead NodeID
	Role Role
}

// Status is a snapshot of a node's volatile and persistent state, for
// reporting (lockctl status) and tests.
type Status struct {
	ID        NodeID
	Role      Role
	Term      Term
	Vote      NodeID
	Lead      NodeID
	Commit    Index
	Applied   Index
	LastIndex Index
	// LogBase is the last entry compacted away (0 if none): the log in
	// memory holds (LogBase, LastIndex].
	LogBase      Index
	Progress     map[NodeID]ProgressStatus
	LeadTransfer NodeID
	// Config is the configuration in use (the latest in the log), from the
	// entry at ConfigIndex (0: the bootstrap one); ConfigCommitted says
	// whether that entry is committed (no change in progress).
	Config          Configuration
	ConfigIndex     Index
	ConfigCommitted bool
	// SinceLeaderContact is the ticks since a follower last heard from
	// its leader (0 on the leader).
	SinceLeaderContact int
}

// ProgressStatus is the leader's view of one follower.
type ProgressStatus struct {
	Match, Next  Index
	State        string
	Inflight     int
	RecentActive bool
	// Learner: the member receives the log but does not vote.
	Learner bool
}

// ReadState is the answer to a ReadIndex request: once the local state
// machine has applied Index, a read issued at ID is linearizable. If
// Dropped is true, the request could not be served (leadership lost, no
// leader) and must be retried.
type ReadState struct {
	ID      uint64
	Index   Index
	Dropped bool
}

// Errors returned by the core's inputs.
var (
	// ErrNotLeader: proposals and leadership transfers need the leader.
	ErrNotLeader = errors.New("not the leader")
	// ErrTransferInProgress: the leader refuses proposals while handing
	// leadership over, so that the target can catch up.
	ErrTransferInProgress = errors.New("leadership transfer in progress")
	// ErrProposalDropped: the proposal was empty or too large.
	ErrProposalDropped = errors.New("proposal dropped")
	// ErrUnknownNode: a message or transfer names a node outside the cluster.
	ErrUnknownNode = errors.New("unknown node")
)

// NotLeaderError carries the known leader, if any, with ErrNotLeader.
type NotLeaderError struct {
	Leader NodeID // None if unknown
	Term   Term
}

func (e *NotLeaderError) Error() string {
	if e.Leader == None {
		return fmt.Sprintf("not the leader and no leader is known in term %d; retry after an election", e.Term)
	}
	return fmt.Sprintf("not the leader; node %d is leader in term %d", e.Leader, e.Term)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
