package peer

import (
	"encoding/binary"
	"fmt"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/internal/msgp"
)

// The Raft wire types are encoded as msgpack arrays (toarray): positional,
// compact and quick to decode. Fields may only be appended; a change of
// meaning needs a new protocol version.
//
// A MsgApp's entries travel as one msgpack bin value, an entry block (see
// appendEntryBlock), not as msgpack structs: go-msgpack has no fast paths,
// and its reflection costs about a microsecond per entry each way, which
// made the codec the bottleneck of replication (~150 MB/s for 100-byte
// entries on one core). The block is the bytes of the entries laid end to
// end; its parser is covered by FuzzWireBodies.

type wireMessage struct {
	_struct       bool `codec:",toarray"`
	Type          uint8
	From          uint64
	To            uint64
	Term          uint64
	PrevIndex     uint64
	PrevTerm      uint64
	Entries       []byte // entry block; entry i has index PrevIndex+1+i
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
	// Addr is the sender's advertised peer address (may be empty), so a
	// receiver whose configuration does not list the sender yet can
	// answer it.
	Addr string
}

// maxWireMessages bounds the messages in one batch a receiver accepts.
// It is checked before decoding: a message can be encoded in one byte
// (nil) but decodes to a struct of over a hundred, so a frame of nils
// would otherwise cost a hundred times its size in memory.
const maxWireMessages = 4 * maxBatchMessages

// CheckBody implements rpc.BodyChecker: it reads the message count in an
// encoded wireBatch (an array whose second element is the array of
// messages) and refuses more than maxWireMessages.
func (*wireBatch) CheckBody(body []byte) error {
	n, rest, err := msgpackArrayLen(body)
	if err != nil || n < 2 {
		return fmt.Errorf("raft batch is not an array of at least 2 elements")
	}
	rest, err = msgpackSkipInt(rest)
	if err != nil {
		return fmt.Errorf("raft batch sender: %w", err)
	}
	if len(rest) > 0 && rest[0] == 0xc0 { // nil: no messages
		return nil
	}
	count, _, err := msgpackArrayLen(rest)
	if err != nil {
		return fmt.Errorf("raft batch messages: %w", err)
	}
	if count > maxWireMessages {
		return fmt.Errorf("raft batch of %d messages exceeds the limit of %d", count, maxWireMessages)
	}
	return nil
}

// msgpackArrayLen reads a msgpack array header.
func msgpackArrayLen(b []byte) (int, []byte, error) {
	switch {
	case len(b) == 0:
		return 0, nil, fmt.Errorf("empty")
	case b[0] >= 0x90 && b[0] <= 0x9f:
		return int(b[0] & 0x0f), b[1:], nil
	case b[0] == 0xdc && len(b) >= 3:
		return int(binary.BigEndian.Uint16(b[1:])), b[3:], nil
	case b[0] == 0xdd && len(b) >= 5:
		return int(binary.BigEndian.Uint32(b[1:])), b[5:], nil
	}
	return 0, nil, fmt.Errorf("not an array (byte %#x)", b[0])
}

// msgpackSkipInt skips one msgpack integer (or nil).
func msgpackSkipInt(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("missing integer")
	}
	n := 0
	switch c := b[0]; {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0:
	case c == 0xcc || c == 0xd0:
		n = 1
	case c == 0xcd || c == 0xd1:
		n = 2
	case c == 0xce || c == 0xd2:
		n = 4
	case c == 0xcf || c == 0xd3:
		n = 8
	default:
		return nil, fmt.Errorf("not an integer (byte %#x)", c)
	}
	if len(b) < 1+n {
		return nil, fmt.Errorf("integer cut short")
	}
	return b[1+n:], nil
}

// entryHeaderSize is the fixed part of an entry in a block:
// term (8), type (1), time (8), checksum (4), data length (4), big-endian.
const entryHeaderSize = 25

// appendEntryBlock appends the entry block of ents to b.
func appendEntryBlock(b []byte, ents []consensus.Entry) []byte {
	for i := range ents {
		e := &ents[i]
		b = binary.BigEndian.AppendUint64(b, uint64(e.Term))
		b = append(b, byte(e.Type))
		b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
		b = binary.BigEndian.AppendUint32(b, e.Checksum)
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

// parseEntryBlock decodes an entry block whose first entry has index
// first. Data slices point into block (capacity-clipped), which the caller
// must own; every checksum is verified.
func parseEntryBlock(block []byte, first consensus.Index) ([]consensus.Entry, error) {
	n := 0
	for off := 0; off < len(block); n++ {
		if len(block)-off < entryHeaderSize {
			return nil, fmt.Errorf("entry block cut short in entry %d", n)
		}
		size := int(binary.BigEndian.Uint32(block[off+21:]))
		if size > len(block)-off-entryHeaderSize {
			return nil, fmt.Errorf("entry %d claims %d data bytes, %d left", n, size, len(block)-off-entryHeaderSize)
		}
		off += entryHeaderSize + size
	}
	ents := make([]consensus.Entry, n)
	off := 0
	for i := range ents {
		h := block[off : off+entryHeaderSize]
		size := int(binary.BigEndian.Uint32(h[21:]))
		data := block[off+entryHeaderSize : off+entryHeaderSize+size : off+entryHeaderSize+size]
		if size == 0 {
			data = nil
		}
		ents[i] = consensus.Entry{
			Index: first + consensus.Index(i), Term: consensus.Term(binary.BigEndian.Uint64(h[0:])),
			Type: consensus.EntryType(h[8]), Time: int64(binary.BigEndian.Uint64(h[9:])),
			Checksum: binary.BigEndian.Uint32(h[17:]), Data: data,
		}
		if err := ents[i].Verify(); err != nil {
			return nil, err
		}
		off += entryHeaderSize + size
	}
	return ents, nil
}

// appendWire appends m's wire form to msgs; its entry block is appended to
// blocks (scratch reused across batches) and referenced from the message.
func appendWire(msgs []wireMessage, blocks []byte, m *consensus.Message) ([]wireMessage, []byte) {
	w := wireMessage{
		Type: uint8(m.Type), From: uint64(m.From), To: uint64(m.To), Term: uint64(m.Term),
		PrevIndex: uint64(m.PrevIndex), PrevTerm: uint64(m.PrevTerm), Commit: uint64(m.Commit),
		Index: uint64(m.Index), Reject: m.Reject, RejectIndex: uint64(m.RejectIndex),
		ConflictTerm: uint64(m.ConflictTerm), ConflictIndex: uint64(m.ConflictIndex), Context: m.Context,
	}
	if len(m.Entries) > 0 {
		start := len(blocks)
		blocks = appendEntryBlock(blocks, m.Entries)
		w.Entries = blocks[start:len(blocks):len(blocks)]
	}
	return append(msgs, w), blocks
}

// toMessage converts and checks a message that arrived from the network:
// a known type, both ends named, entries only on MsgApp and each with an
// intact checksum. Past this gateway the message is trusted. The entries'
// data point into w.Entries, which the decoder allocated for this message.
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
		return m, fmt.Errorf("%s carries entries", m.Type)
	}
	if m.PrevIndex == ^consensus.Index(0) {
		return m, fmt.Errorf("%s from node %d: entries after index %d", m.Type, m.From, m.PrevIndex)
	}
	ents, err := parseEntryBlock(w.Entries, m.PrevIndex+1)
	if err != nil {
		return m, fmt.Errorf("%s from node %d after index %d: %w", m.Type, m.From, m.PrevIndex, err)
	}
	m.Entries = ents
	return m, nil
}

// snapshotHeader is the request of rpc.MethodRaftSnapshot.
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

// The batch's codec is hand-written (rpc.MsgpackAppender and
// rpc.MsgpackDecoder): it writes exactly what go-msgpack writes for the
// toarray structs above and reads that form back, leaving every other
// form to go-msgpack. Each node encodes or decodes every batch it sends
// or receives, and go-msgpack's reflection was a tenth of a follower's
// CPU under a put load. TestWireBatchCodecMatchesGoMsgpack keeps the two
// in step.

// wireMessageFields is the number of fields of wireMessage on the wire.
const wireMessageFields = 14

// AppendMsgpack implements rpc.MsgpackAppender.
func (wb *wireBatch) AppendMsgpack(b []byte) []byte {
	if wb == nil {
		return msgp.AppendNil(b)
	}
	b = msgp.AppendUint(msgp.AppendArrayHeader(b, 3), wb.From)
	if wb.Msgs == nil {
		b = msgp.AppendNil(b)
	} else {
		b = msgp.AppendArrayHeader(b, len(wb.Msgs))
		for i := range wb.Msgs {
			b = wb.Msgs[i].appendMsgpack(b)
		}
	}
	return msgp.AppendString(b, wb.Addr)
}

func (w *wireMessage) appendMsgpack(b []byte) []byte {
	b = msgp.AppendArrayHeader(b, wireMessageFields)
	b = msgp.AppendUint(b, uint64(w.Type))
	b = msgp.AppendUint(b, w.From)
	b = msgp.AppendUint(b, w.To)
	b = msgp.AppendUint(b, w.Term)
	b = msgp.AppendUint(b, w.PrevIndex)
	b = msgp.AppendUint(b, w.PrevTerm)
	b = msgp.AppendBytes(b, w.Entries)
	b = msgp.AppendUint(b, w.Commit)
	b = msgp.AppendUint(b, w.Index)
	b = msgp.AppendBool(b, w.Reject)
	b = msgp.AppendUint(b, w.RejectIndex)
	b = msgp.AppendUint(b, w.ConflictTerm)
	b = msgp.AppendUint(b, w.ConflictIndex)
	return msgp.AppendUint(b, w.Context)
}

// DecodeMsgpack implements rpc.MsgpackDecoder.
func (wb *wireBatch) DecodeMsgpack(body []byte) bool {
	r := msgp.NewReader(body)
	if r.ArrayHeader() != 3 {
		r.Fail()
	}
	wb.From = r.Uint64()
	if !r.IsNil() {
		n := r.ArrayHeader()
		if n > maxWireMessages {
			// A message takes 15 bytes at least on the wire and about 130
			// in memory: bound the allocation before reading any (the
			// server checks the count with CheckBody as well).
			r.Fail()
		}
		if !r.Failed() {
			wb.Msgs = make([]wireMessage, n)
		}
		for i := 0; i < n && !r.Failed(); i++ {
			wb.Msgs[i].read(&r)
		}
	}
	wb.Addr = r.Str()
	if !r.Done() {
		*wb = wireBatch{}
		return false
	}
	return true
}

func (w *wireMessage) read(r *msgp.Reader) {
	if r.ArrayHeader() != wireMessageFields {
		r.Fail()
		return
	}
	w.Type = uint8(r.Uint(255))
	w.From = r.Uint64()
	w.To = r.Uint64()
	w.Term = r.Uint64()
	w.PrevIndex = r.Uint64()
	w.PrevTerm = r.Uint64()
	w.Entries = r.Bytes()
	w.Commit = r.Uint64()
	w.Index = r.Uint64()
	w.Reject = r.Bool()
	w.RejectIndex = r.Uint64()
	w.ConflictTerm = r.Uint64()
	w.ConflictIndex = r.Uint64()
	w.Context = r.Uint64()
}
