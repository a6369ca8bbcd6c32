package api_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// fastMessage is a message type with a hand-written codec.
type fastMessage interface {
	rpc.MsgpackAppender
	rpc.MsgpackDecoder
}

func goMsgpackEncode(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, rpc.NewHandle()).Encode(v); err != nil {
		t.Fatalf("encoding %T: %v", v, err)
	}
	return b
}

// goMsgpackDecode decodes all of body into v as rpc does.
func goMsgpackDecode(body []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errPanic
		}
	}()
	d := codec.NewDecoderBytes(body, rpc.NewHandle())
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.NumBytesRead() != len(body) {
		return errTrailing
	}
	return nil
}

type testErr string

func (e testErr) Error() string { return string(e) }

const (
	errPanic    = testErr("go-msgpack panicked")
	errTrailing = testErr("trailing bytes")
)

func randBytes(rng *rand.Rand) []byte {
	switch rng.IntN(5) {
	case 0:
		return nil
	case 1:
		return []byte{}
	case 2:
		return bytes.Repeat([]byte{byte(rng.Uint32())}, 200+rng.IntN(70000))
	}
	b := make([]byte, rng.IntN(300))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func randString(rng *rand.Rand) string {
	switch rng.IntN(4) {
	case 0:
		return ""
	case 1:
		return strings.Repeat("x", 250+rng.IntN(70000))
	}
	return strings.Repeat("k", rng.IntN(40))
}

func randUint(rng *rand.Rand) uint64 {
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

func randInt(rng *rand.Rand) int64 {
	switch rng.IntN(5) {
	case 0:
		return 0
	case 1:
		return int64(rng.Uint64())
	case 2:
		return math.MinInt64
	case 3:
		return -int64(rng.IntN(70000))
	}
	return int64(rng.IntN(70000))
}

func randKV(rng *rand.Rand) *api.KeyValue {
	if rng.IntN(2) == 0 {
		return nil
	}
	return &api.KeyValue{Key: randString(rng), Value: randBytes(rng), CreateRevision: randInt(rng),
		ModRevision: randInt(rng), Version: randInt(rng), Session: session.ID(randUint(rng))}
}

// randomMessages returns one random value of each type with a
// hand-written codec, and a fresh zero value to decode into.
func randomMessages(rng *rand.Rand) []struct{ v, zero fastMessage } {
	return []struct{ v, zero fastMessage }{
		{&api.KVPutRequest{Write: api.WriteHeader{ClientID: randUint(rng), Seq: randUint(rng)},
			Key: randString(rng), Value: randBytes(rng), Session: session.ID(randUint(rng))}, new(api.KVPutRequest)},
		{&api.KVPutResponse{Revision: randInt(rng), PrevKV: randKV(rng)}, new(api.KVPutResponse)},
	}
}

// TestFastCodecsMatchGoMsgpack: each hand-written encoder writes what
// go-msgpack writes, and each hand-written decoder reads go-msgpack's
// bytes into what go-msgpack reads.
func TestFastCodecsMatchGoMsgpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		for _, m := range randomMessages(rng) {
			want := goMsgpackEncode(t, m.v)
			got := m.v.AppendMsgpack(nil)
			if !bytes.Equal(got, want) {
				t.Fatalf("case %d: %T encodes as\n%x\ngo-msgpack:\n%x", i, m.v, head(got), head(want))
			}
			if !m.zero.DecodeMsgpack(want) {
				t.Fatalf("case %d: %T did not decode go-msgpack's encoding %x", i, m.v, head(want))
			}
			ref := reflect.New(reflect.TypeOf(m.v).Elem()).Interface()
			if err := goMsgpackDecode(want, ref); err != nil {
				t.Fatalf("case %d: go-msgpack: %v", i, err)
			}
			if !reflect.DeepEqual(m.zero, ref) {
				t.Fatalf("case %d: %T decoded as %+v, go-msgpack %+v", i, m.v, m.zero, ref)
			}
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 80)] }

// TestFastDecodersLeaveOtherFormsToGoMsgpack: forms the decoders do not
// handle make them answer false with the value left zero.
func TestFastDecodersLeaveOtherFormsToGoMsgpack(t *testing.T) {
	type other struct {
		Write   api.WriteHeader `codec:"w"`
		Key     []byte          `codec:"k"` // bin, not str
		Unknown int             `codec:"x"`
	}
	bodies := map[string][]byte{
		"nil":           {0xc0},
		"unknown field": goMsgpackEncode(t, &other{Key: []byte("a"), Unknown: 1}),
		"key as bin": goMsgpackEncode(t, &struct {
			K []byte `codec:"k"`
		}{[]byte("a")}),
		"duplicate field":  {0x82, 0xa1, 'k', 0xa1, 'a', 0xa1, 'k', 0xa1, 'b'},
		"trailing bytes":   append(goMsgpackEncode(t, &api.KVPutRequest{Key: "a"}), 0x01),
		"cut short":        goMsgpackEncode(t, &api.KVPutRequest{Key: "abc"})[:8],
		"negative session": {0x81, 0xa1, 's', 0xff},
		"array form":       {0x91, 0x80},
	}
	for name, body := range bodies {
		q := &api.KVPutRequest{}
		if q.DecodeMsgpack(body) {
			t.Errorf("%s: KVPutRequest decoded %x", name, body)
		}
		if !reflect.DeepEqual(q, &api.KVPutRequest{}) {
			t.Errorf("%s: KVPutRequest left as %+v, want zero", name, q)
		}
		p := &api.KVPutResponse{}
		if p.DecodeMsgpack(body) {
			t.Errorf("%s: KVPutResponse decoded %x", name, body)
		}
		if !reflect.DeepEqual(p, &api.KVPutResponse{}) {
			t.Errorf("%s: KVPutResponse left as %+v, want zero", name, p)
		}
	}
}

// FuzzFastDecoders: whatever the bytes, a hand-written decoder does not
// panic, and when it accepts a body go-msgpack accepts it too and reads
// the same value.
func FuzzFastDecoders(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		for _, m := range randomMessages(rng) {
			if b := m.v.AppendMsgpack(nil); len(b) < 4096 {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, z := range []func() fastMessage{
			func() fastMessage { return new(api.KVPutRequest) },
			func() fastMessage { return new(api.KVPutResponse) },
		} {
			fast, zero, ref := z(), z(), z()
			if !fast.DecodeMsgpack(body) {
				if !reflect.DeepEqual(fast, zero) {
					t.Fatalf("%T refused %x but was left as %+v", fast, body, fast)
				}
				continue
			}
			if err := goMsgpackDecode(body, ref); err != nil {
				t.Fatalf("%T decoded %x, which go-msgpack refuses: %v", fast, body, err)
			}
			if !reflect.DeepEqual(fast, ref) {
				t.Fatalf("%T decoded %x as %+v, go-msgpack as %+v", fast, body, fast, ref)
			}
		}
	})
}

// TestFastCodecsAllocateOnlyTheirData: encoding into a buffer with room
// allocates nothing, and decoding a put allocates only its key and value.
func TestFastCodecsAllocateOnlyTheirData(t *testing.T) {
	q := &api.KVPutRequest{Write: api.WriteHeader{ClientID: 7, Seq: 9}, Key: "bench/put/00000001", Value: make([]byte, 256)}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = q.AppendMsgpack(buf[:0]) }); n != 0 {
		t.Errorf("encoding a put allocated %v times", n)
	}
	body := q.AppendMsgpack(nil)
	var got api.KVPutRequest
	if n := testing.AllocsPerRun(100, func() {
		got = api.KVPutRequest{}
		got.DecodeMsgpack(body)
	}); n != 2 {
		t.Errorf("decoding a put allocated %v times, want 2 (key and value)", n)
	}
}
