package rpc

import (
	"fmt"

	"github.com/lockd/lockd/consensus"
)

// Methods of the peer transport. Method numbers 1..63 are reserved for
// it; other users of a shared Server take numbers from 64 on.
const (
	MethodRaftMessages Method = 1
	MethodRaftSnapshot Method = 2
	// FirstUserMethod is the first method number free for other services.
	FirstUserMethod Method = 64
)

// The Raft wire types are encoded as msgpack arrays (toarray): positional,
// compact and quick to decode. Fields may only be appended; a change of
// meaning needs a new protocol version.

type wireEntry struct {
	_struct  bool `codec:",toarray"`
	Index    uint64
	Term     uint64
	Type     uint8
	Time     int64
	Data     []byte
	Checksum uint32
}

type wireMessage struct {
	_struct       bool `codec:",toarray"`
	Type          uint8
	From          uint64
	To            uint64
	Term          uint64
	PrevIndex     uint64
	PrevTerm      uint64
	Entries       []wireEntry
	Commit        uint64
	Index         uint64
	Reject        bool
	RejectIndex   uint64
	ConflictTerm  uint64
	ConflictIndex uint64
	Context       uint64
}

// wireBatch is the request of MethodRaftMessages: messages from one node,
// in send order.
type wireBatch struct {
	_struct bool `codec:",toarray"`
	From    uint64
	Msgs    []wireMessage
}

// appendWire appends m's wire form to msgs, taking entries from ents
// (scratch reused across batches); the data slices are shared, not copied.
func appendWire(msgs []wireMessage, ents []wireEntry, m *consensus.Message) ([]wireMessage, []wireEntry) {
	start := len(ents)
	for i := range m.Entries {
		e := &m.Entries[i]
		ents = append(ents, wireEntry{Index: uint64(e.Index), Term: uint64(e.Term), Type: uint8(e.Type), Time: e.Time, Data: e.Data, Checksum: e.Checksum})
	}
	w := wireMessage{
		Type: uint8(m.Type), From: uint64(m.From), To: uint64(m.To), Term: uint64(m.Term),
		PrevIndex: uint64(m.PrevIndex), PrevTerm: uint64(m.PrevTerm), Commit: uint64(m.Commit),
		Index: uint64(m.Index), Reject: m.Reject, RejectIndex: uint64(m.RejectIndex),
		ConflictTerm: uint64(m.ConflictTerm), ConflictIndex: uint64(m.ConflictIndex), Context: m.Context,
	}
	if len(m.Entries) > 0 {
		w.Entries = ents[start:len(ents):len(ents)]
	}
	return append(msgs, w), ents
}

// toMessage converts and checks a message that arrived from the network:
// a known type, both ends named, every entry's checksum intact and the
// entries contiguous. Past this gateway the message is trusted.
func (w *wireMessage) toMessage() (consensus.Message, error) {
	m := consensus.Message{
		Type: consensus.MessageType(w.Type), From: consensus.NodeID(w.From), To: consensus.NodeID(w.To),
		Term: consensus.Term(w.Term), PrevIndex: consensus.Index(w.PrevIndex), PrevTerm: consensus.Term(w.PrevTerm),
		Commit: consensus.Index(w.Commit), Index: consensus.Index(w.Index), Reject: w.Reject,
		RejectIndex: consensus.Index(w.RejectIndex), ConflictTerm: consensus.Term(w.ConflictTerm),
		ConflictIndex: consensus.Index(w.ConflictIndex), Context: w.Context,
	}
	if m.Type < consensus.MsgApp || m.Type > consensus.MsgReadIndexResp {
		return m, fmt.Errorf("unknown message type %d", w.Type)
	}
	if m.From == consensus.None || m.To == consensus.None {
		return m, fmt.Errorf("%s from node %d to node %d: both must be set", m.Type, m.From, m.To)
	}
	if len(w.Entries) == 0 {
		return m, nil
	}
	if m.Type != consensus.MsgApp {
		return m, fmt.Errorf("%s carries %d entries", m.Type, len(w.Entries))
	}
	m.Entries = make([]consensus.Entry, len(w.Entries))
	for i := range w.Entries {
		we := &w.Entries[i]
		e := consensus.Entry{
			Index: consensus.Index(we.Index), Term: consensus.Term(we.Term), Type: consensus.EntryType(we.Type),
			Time: we.Time, Data: we.Data, Checksum: we.Checksum,
		}
		if err := e.Verify(); err != nil {
			return m, fmt.Errorf("%s from node %d: %w", m.Type, m.From, err)
		}
		if want := m.PrevIndex + 1 + consensus.Index(i); e.Index != want {
			return m, fmt.Errorf("%s from node %d: entry %d at position %d, want index %d", m.Type, m.From, e.Index, i, want)
		}
		m.Entries[i] = e
	}
	return m, nil
}

// snapshotHeader is the request of MethodRaftSnapshot.
type snapshotHeader struct {
	_struct bool `codec:",toarray"`
	From    uint64
	To      uint64
	Index   uint64
	Term    uint64
	Voters  []uint64
	Size    int64
}

// snapshotChunk is one message of a snapshot stream. The last one has Done
// set, no data, and the total size and CRC-32C of the bytes sent.
type snapshotChunk struct {
	_struct bool `codec:",toarray"`
	Data    []byte
	Done    bool
	Size    int64
	CRC     uint32
}
