package peer

import (
	"context"
	"testing"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
)

// BenchmarkAppendEntries: MsgApp of 256 entries × 100 bytes through the
// peer transport (encode, batch, write, read, decode, verify checksums,
// hand to the handler), up to 32 messages in flight.
func BenchmarkAppendEntries(b *testing.B) {
	nodes := newTestNodes(b, 2, nil)
	a, r := nodes[0], nodes[1]
	got := make(chan struct{}, 1<<16)
	r.tr.SetHandler(func(ctx context.Context, m consensus.Message) error {
		got <- struct{}{}
		return nil
	})
	ents := entries(1, 257, 100)
	msg := consensus.Message{Type: consensus.MsgApp, From: 1, To: 2, Term: 1, PrevIndex: 0, Entries: ents}
	// Warm up the connection.
	a.tr.Send([]consensus.Message{msg})
	<-got
	b.SetBytes(256 * 100)
	b.ReportAllocs()
	b.ResetTimer()
	received := 0
	for i := 0; i < b.N; i++ {
		for i-received >= 32 {
			<-got
			received++
		}
		a.tr.Send([]consensus.Message{msg})
	}
	for received < b.N {
		<-got
		received++
	}
	b.StopTimer()
	if st := a.tr.Stats(); st.Dropped != 0 {
		b.Fatalf("dropped %d", st.Dropped)
	}
}

// BenchmarkAppendCodec: encoding and decoding (with checks) of one MsgApp
// of 256 entries × 100 bytes, without the network.
func BenchmarkAppendCodec(b *testing.B) {
	msg := consensus.Message{Type: consensus.MsgApp, From: 1, To: 2, Term: 1, Entries: entries(1, 257, 100)}
	h := rpc.NewHandle()
	var buf []byte
	enc := codecNewEncoder(&buf, h)
	dec := newBodyDecoder()
	var wb wireBatch
	var ents []byte
	b.SetBytes(256 * 100)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		wb.From = 1
		wb.Msgs, ents = appendWire(wb.Msgs[:0], ents[:0], &msg)
		buf = buf[:0]
		enc.ResetBytes(&buf)
		if err := rpc.SafeEncode(enc, &wb); err != nil {
			b.Fatal(err)
		}
		var got wireBatch
		if err := dec.decode(buf, &got); err != nil {
			b.Fatal(err)
		}
		if m, err := got.Msgs[0].toMessage(); err != nil || len(m.Entries) != 256 {
			b.Fatal(err)
		}
	}
}
