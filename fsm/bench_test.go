package fsm

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// benchApply applies pre-encoded commands; mk builds the i-th command.
func benchApply(b *testing.B, setup func(h *tfsm), mk func(h *tfsm, i int) []Command) {
	h := &tfsm{now: t0}
	f, err := New(DefaultConfig(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	h.f = f
	if setup != nil {
		setup(h)
	}
	var data [][]byte
	base := h.index
	for i := 0; i < b.N; i++ {
		for _, c := range mk(h, i) {
			d, err := f.Codec().Encode(&c)
			if err != nil {
				b.Fatal(err)
			}
			data = append(data, d)
			h.index++ // commands may refer to the index they will get
		}
	}
	h.index = base
	b.ReportAllocs()
	b.ResetTimer()
	for _, d := range data {
		h.index++
		h.now = h.now.Add(time.Microsecond)
		if res := f.Apply(h.index, h.now.UnixNano(), d); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	b.ReportMetric(float64(len(data))/b.Elapsed().Seconds(), "cmds/s")
}

func BenchmarkApply(b *testing.B) {
	b.Run("put", func(b *testing.B) {
		val := make([]byte, 100)
		benchApply(b, nil, func(h *tfsm, i int) []Command {
			return []Command{{Kind: KindPut, Put: &Put{Key: fmt.Sprintf("key/%06d", i%10000), Value: val}}}
		})
	})
	b.Run("lock-acquire-release", func(b *testing.B) {
		var s session.ID
		benchApply(b, func(h *tfsm) {
			h.t = nil
			data, _ := h.f.Codec().Encode(&Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second)}})
			h.index++
			s = h.f.Apply(h.index, h.now.UnixNano(), data).Session.ID
		}, func(h *tfsm, i int) []Command {
			// The grant's token is the acquire's index.
			return []Command{acquire("l", s, api.Exclusive, 0, false), release("l", s, h.index+1)}
		})
	})
	b.Run("session-create", func(b *testing.B) {
		benchApply(b, nil, func(h *tfsm, i int) []Command {
			return []Command{{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second)}}}
		})
	})
	b.Run("txn-4-ops", func(b *testing.B) {
		val := make([]byte, 100)
		benchApply(b, nil, func(h *tfsm, i int) []Command {
			k := fmt.Sprintf("t/%05d", i%1000)
			return []Command{{Kind: KindTxn, Txn: &Txn{
				Compares: []api.Compare{{Key: k, Target: api.CompareVersion, Op: api.Greater, Number: -1}},
				Then: []api.Op{{Type: api.OpPut, Key: k, Value: val}, {Type: api.OpPut, Key: k + "/b", Value: val},
					{Type: api.OpGet, Key: k}},
			}}}
		})
	})
}

// BenchmarkSnapshot: 100,000 keys and 10,000 sessions each holding a lock.
func BenchmarkSnapshot(b *testing.B) {
	f, _ := New(DefaultConfig(time.Second))
	h := &tfsm{f: f, now: t0}
	val := make([]byte, 100)
	apply := func(c Command) *Result {
		data, _ := f.Codec().Encode(&c)
		h.index++
		return f.Apply(h.index, h.now.UnixNano(), data)
	}
	for i := 0; i < 100_000; i++ {
		apply(Command{Kind: KindPut, Put: &Put{Key: fmt.Sprintf("key/%06d", i), Value: val}})
	}
	for i := 0; i < 10_000; i++ {
		s := apply(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second)}}).Session.ID
		apply(acquire(fmt.Sprintf("lock/%05d", i), s, api.Exclusive, 0, false))
	}
	var buf bytes.Buffer
	b.Run("write", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			buf.Reset()
			if err := f.Snapshot(&buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(buf.Len())/(1<<20), "MiB")
	})
	b.Run("restore", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			g, _ := New(DefaultConfig(time.Second))
			if err := g.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCommandCodec encodes and decodes a 256-byte put: what every
// write costs the leader (encode) and every node (decode).
func BenchmarkCommandCodec(b *testing.B) {
	cd := NewCodec()
	c := &Command{Kind: KindPut, ClientID: 42, Seq: 7, Put: &Put{Key: "bench/key/00001234", Value: make([]byte, 256)}}
	b.ReportAllocs()
	for b.Loop() {
		data, err := cd.Encode(c)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cd.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}
