package peer

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/lockd/lockd/consensus"
)

// fuzzSeedBodies are the bodies of the transport's frames: requests (the
// deadline prefix, then a batch or a snapshot header) and a stream message
// (a snapshot chunk).
func fuzzSeedBodies(t testing.TB) [][]byte {
	var wb wireBatch
	var ents []byte
	m := consensus.Message{Type: consensus.MsgApp, From: 1, To: 2, Term: 3, Entries: entries(1, 3, 8)}
	wb.From = 1
	wb.Msgs, ents = appendWire(wb.Msgs, ents, &m)
	hb := consensus.Message{Type: consensus.MsgHeartbeat, From: 1, To: 2, Commit: 4}
	wb.Msgs, _ = appendWire(wb.Msgs, ents, &hb)
	var deadline [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(deadline[:], 1500)
	return [][]byte{
		append([]byte{0}, encode(t, &wb)...),
		append(deadline[:n:n], encode(t, &wb)...),
		append([]byte{0}, encode(t, &snapshotHeader{From: 1, To: 2, Index: 9, Term: 2, Voters: []uint64{1, 2, 3}, Size: 3})...),
		encode(t, &snapshotChunk{Data: []byte("abc"), Done: true, Size: 3}),
		{0, 0x92, 0x01, 0xdd, 0x00, 0x01, 0x00, 0x00, 0xc0, 0xc0},
	}
}

// FuzzWireBodies feeds arbitrary bytes to every body decoder of the
// transport, as its methods receive them (rpc's FuzzFrameDecoder covers
// the frames around them): nothing may panic, whether the batch passes
// its size check, decodes, or is converted and checked message by
// message, including each MsgApp's entry block; and the hand-written
// batch decoder accepts only what go-msgpack reads alike.
func FuzzWireBodies(f *testing.F) {
	for _, s := range fuzzSeedBodies(f) {
		f.Add(s)
	}
	dec := newBodyDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, n := binary.Uvarint(data); n > 0 {
			body := data[n:]
			var wb, fast wireBatch
			if fast.DecodeMsgpack(body) {
				if err := dec.decode(body, &wb); err != nil {
					t.Fatalf("the hand-written decoder took %x, which go-msgpack refuses: %v", body, err)
				}
				if !reflect.DeepEqual(fast, wb) {
					t.Fatalf("the hand-written decoder read %x as %+v, go-msgpack as %+v", body, fast, wb)
				}
			} else if !reflect.DeepEqual(fast, wireBatch{}) {
				t.Fatalf("the hand-written decoder refused %x but left %+v", body, fast)
			}
			wb = wireBatch{}
			if wb.CheckBody(body) == nil && dec.decode(body, &wb) == nil {
				for i := range wb.Msgs {
					_, _ = wb.Msgs[i].toMessage()
				}
			}
			var sh snapshotHeader
			_ = dec.decode(body, &sh)
		}
		var ch snapshotChunk
		_ = dec.decode(data, &ch)
	})
}
