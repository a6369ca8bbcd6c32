package peer

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/lockd/lockd/consensus"
)

func randomWireBatch(rng *rand.Rand) *wireBatch {
	u := func() uint64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return rng.Uint64()
		case 2:
			return math.MaxUint64
		}
		return uint64(rng.IntN(70000))
	}
	wb := &wireBatch{From: u()}
	if rng.IntN(3) == 0 {
		wb.Addr = "127.0.0.1:7001"
	}
	switch n := rng.IntN(40); {
	case n == 0: // nil: no messages
	case n == 1:
		wb.Msgs = []wireMessage{}
	default:
		for range n - 1 {
			w := wireMessage{Type: uint8(rng.Uint32()), From: u(), To: u(), Term: u(), PrevIndex: u(), PrevTerm: u(),
				Commit: u(), Index: u(), Reject: rng.IntN(2) == 0, RejectIndex: u(), ConflictTerm: u(),
				ConflictIndex: u(), Context: u()}
			switch rng.IntN(4) {
			case 0:
				w.Entries = []byte{}
			case 1:
				m := consensus.Message{Type: consensus.MsgApp, Entries: entries(1, consensus.Index(1+rng.IntN(20)), 300)}
				w.Entries = appendEntryBlock(nil, m.Entries)
			}
			wb.Msgs = append(wb.Msgs, w)
		}
	}
	return wb
}

// TestWireBatchCodecMatchesGoMsgpack: the hand-written batch encoder writes
// what go-msgpack writes, and its decoder reads go-msgpack's bytes into
// what go-msgpack reads.
func TestWireBatchCodecMatchesGoMsgpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	dec := newBodyDecoder()
	for i := range 500 {
		wb := randomWireBatch(rng)
		want := encode(t, wb)
		if got := wb.AppendMsgpack(nil); !bytes.Equal(got, want) {
			t.Fatalf("case %d: batch encodes as\n%x\ngo-msgpack:\n%x", i, got[:min(len(got), 100)], want[:min(len(want), 100)])
		}
		var fast, ref wireBatch
		if !fast.DecodeMsgpack(want) {
			t.Fatalf("case %d: go-msgpack's encoding did not decode", i)
		}
		if err := dec.decode(want, &ref); err != nil {
			t.Fatalf("case %d: go-msgpack: %v", i, err)
		}
		if !reflect.DeepEqual(fast, ref) {
			t.Fatalf("case %d: batch decoded as\n%+v\ngo-msgpack\n%+v", i, fast, ref)
		}
	}
	// Forms left to go-msgpack: the value stays zero.
	for name, body := range map[string][]byte{
		"two fields":          {0x92, 0x01, 0xc0},
		"message of 13":       {0x93, 0x01, 0x91, 0x9d, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 0xc2, 0, 0, 0, 0xa0},
		"type over 255":       append(append([]byte{0x93, 0x01, 0x91, 0x9e, 0xcd, 1, 0}, bytes.Repeat([]byte{0}, 5)...), 0xc0, 0, 0, 0xc2, 0, 0, 0, 0, 0xa0),
		"addr as nil":         {0x93, 0x01, 0xc0, 0xc0},
		"trailing byte":       {0x93, 0x01, 0xc0, 0xa0, 0x00},
		"entries as a string": append(append([]byte{0x93, 0x01, 0x91, 0x9e}, bytes.Repeat([]byte{0}, 6)...), 0xa1, 'x', 0, 0, 0xc2, 0, 0, 0, 0, 0xa0),
	} {
		var wb wireBatch
		if wb.DecodeMsgpack(body) {
			t.Errorf("%s: decoded %x", name, body)
		}
		if !reflect.DeepEqual(wb, wireBatch{}) {
			t.Errorf("%s: left as %+v", name, wb)
		}
	}
}

// TestWireBatchDecoderBoundsTheMessageCount: a batch claiming more
// messages than a receiver accepts is left to go-msgpack (and refused by
// CheckBody) before anything is allocated for them.
func TestWireBatchDecoderBoundsTheMessageCount(t *testing.T) {
	body := []byte{0x93, 0x01, 0xdd, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(body[3:], maxWireMessages+1)
	body = append(body, bytes.Repeat([]byte{0xc0}, maxWireMessages+1)...)
	body = append(body, 0xa0)
	var wb wireBatch
	if wb.DecodeMsgpack(body) || wb.Msgs != nil {
		t.Fatalf("decoded a batch of %d messages", maxWireMessages+1)
	}
	if n := testing.AllocsPerRun(10, func() {
		var wb wireBatch
		wb.DecodeMsgpack(body)
	}); n != 0 {
		t.Fatalf("refusing the batch allocated %v times", n)
	}
}
