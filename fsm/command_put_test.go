package fsm

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// putSamples covers every size class of every field the fast path
// writes.
func putSamples() []*Command {
	nums := []uint64{0, 1, 0x7f, 0x80, math.MaxUint8, math.MaxUint8 + 1, math.MaxUint16, math.MaxUint16 + 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}
	keys := []string{"", "k", strings.Repeat("a", 31), strings.Repeat("b", 32), strings.Repeat("c", 255), strings.Repeat("d", 256), strings.Repeat("e", 70000)}
	vals := [][]byte{nil, {}, {0}, bytes.Repeat([]byte{1}, 255), bytes.Repeat([]byte{2}, 256), bytes.Repeat([]byte{3}, 70000)}
	var out []*Command
	for i, n := range nums {
		out = append(out, &Command{Kind: KindPut, ClientID: n, Seq: nums[(i+3)%len(nums)],
			Put: &Put{Key: keys[i%len(keys)], Value: vals[i%len(vals)], Session: session.ID(nums[(i+5)%len(nums)])}})
	}
	for _, k := range keys {
		for _, v := range vals {
			out = append(out, &Command{Kind: KindPut, Put: &Put{Key: k, Value: v}})
		}
	}
	return out
}

func TestPutFastPathMatchesTheGenericCodec(t *testing.T) {
	cd := NewCodec()
	for i, c := range putSamples() {
		c.Version = CommandVersion
		fast := appendPut(nil, c)
		generic, err := cd.encodeGeneric(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, generic) {
			t.Fatalf("sample %d: fast encoding differs from go-msgpack's:\nfast    %x\ngeneric %x", i, fast[:min(len(fast), 64)], generic[:min(len(generic), 64)])
		}
		got, ok := decodePut(generic)
		if !ok {
			t.Fatalf("sample %d: the fast path refused go-msgpack's encoding of a put %x", i, generic[:min(len(generic), 64)])
		}
		want, err := cd.decodeGeneric(generic)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("sample %d: fast decode %+v %+v, generic %+v %+v", i, got, got.Put, want, want.Put)
		}
		// Through the public API too, and the value is not aliased.
		back, err := cd.Decode(fast)
		if err != nil || !reflect.DeepEqual(back, want) {
			t.Fatalf("sample %d: Decode(Encode) = %+v, %v", i, back, err)
		}
		for j := range fast {
			fast[j] ^= 0xff
		}
		if !reflect.DeepEqual(back, want) {
			t.Fatalf("sample %d: the decoded command aliases the input bytes", i)
		}
	}
}

func TestPutFastPathLeavesOtherShapesToTheGenericCodec(t *testing.T) {
	cd := NewCodec()
	others := []*Command{
		{Kind: KindDelete, Delete: &Delete{Key: "k"}},
		{Kind: KindPut, Put: &Put{Key: "k"}, Delete: &Delete{Key: "k"}}, // two bodies: refused by checkShape
		{Kind: KindSessionDestroy, SessionDestroy: &SessionDestroy{ID: 3}},
	}
	for _, c := range others {
		c.Version = CommandVersion
		b, err := cd.encodeGeneric(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := decodePut(b); ok {
			t.Errorf("the fast path took %x (%s)", b, c.Kind)
		}
	}
	// A put of another version is refused as such, on either path.
	c := &Command{Version: CommandVersion + 1, Kind: KindPut, Put: &Put{Key: "k"}}
	if _, err := cd.Decode(appendPut(nil, c)); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("a put of version %d: %v", c.Version, err)
	}
}

func TestPutFastPathRandomRoundTrips(t *testing.T) {
	cd := NewCodec()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		c := &Command{Kind: KindPut, ClientID: r.Uint64() >> r.IntN(64), Seq: r.Uint64() >> r.IntN(64),
			Put: &Put{Key: strings.Repeat("x", r.IntN(300)), Session: session.ID(r.Uint64() >> r.IntN(64))}}
		if r.IntN(4) > 0 {
			c.Put.Value = make([]byte, r.IntN(1000))
		}
		b, err := cd.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := cd.decodeGeneric(b)
		if err != nil {
			t.Fatalf("round %d: generic decode of the fast encoding: %v", i, err)
		}
		got, err := cd.Decode(b)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: %+v %v, want %+v", i, got, err, want)
		}
		if got.ClientID != c.ClientID || got.Seq != c.Seq || got.Put.Key != c.Put.Key || got.Put.Session != c.Put.Session ||
			!bytes.Equal(got.Put.Value, c.Put.Value) || (got.Put.Value == nil) != (c.Put.Value == nil) {
			t.Fatalf("round %d: decoded %+v %+v from %+v %+v", i, got, got.Put, c, c.Put)
		}
	}
}

// FuzzPutFastPath: whatever the fast path accepts, go-msgpack reads the
// same way.
func FuzzPutFastPath(f *testing.F) {
	for _, c := range putSamples()[:12] {
		c.Version = CommandVersion
		f.Add(appendPut(nil, c))
	}
	f.Add([]byte{0x83, 0xa1, 'k', 0x08, 0xa1, 'p', 0x82, 0xa1, 'k', 0xa0, 0xa1, 'v', 0xc0, 0xa1, 'v', 0x01})
	cd := NewCodec()
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodePut(b)
		if !ok {
			return
		}
		want, err := cd.decodeGeneric(b)
		if err != nil {
			t.Fatalf("fast path accepted %x, generic refused it: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%x: fast %+v %+v, generic %+v %+v", b, got, got.Put, want, want.Put)
		}
	})
}

// checkShape runs for every applied command; its verdicts are pinned here
// because it was rewritten to allocate nothing.
func TestCheckShapeVerdicts(t *testing.T) {
	put, del := &Put{Key: "k"}, &Delete{Key: "k"}
	for _, tc := range []struct {
		name string
		c    Command
		want api.Code // 0: accepted
	}{
		{"put with its body", Command{Kind: KindPut, Put: put}, 0},
		{"delete with its body", Command{Kind: KindDelete, Delete: del}, 0},
		{"tick without a body", Command{Kind: KindTick}, 0},
		{"put without a body", Command{Kind: KindPut}, api.CodeInvalid},
		{"put with another body", Command{Kind: KindPut, Delete: del}, api.CodeInvalid},
		{"put with two bodies", Command{Kind: KindPut, Put: put, Delete: del}, api.CodeInvalid},
		{"tick with a body", Command{Kind: KindTick, Put: put}, api.CodeInvalid},
		{"kind 0", Command{Put: put}, api.CodeUnsupported},
		{"unknown kind", Command{Kind: KindTick + 1}, api.CodeUnsupported},
		{"unknown kind with a body", Command{Kind: 200, Put: put}, api.CodeUnsupported},
	} {
		err := tc.c.checkShape()
		if tc.want == 0 {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != tc.want {
			t.Errorf("%s: error %v, want code %v", tc.name, err, tc.want)
		}
	}
	c := Command{Kind: KindPut, Put: put}
	if n := testing.AllocsPerRun(100, func() { _ = c.checkShape() }); n != 0 {
		t.Errorf("checkShape allocates %.0f times per command, want 0", n)
	}
}

// Encode sizes a put's buffer once: putOverhead covers everything but the
// key and value bytes even with every integer at its widest.
func TestPutEncodingFitsItsFirstAllocation(t *testing.T) {
	c := &Command{Kind: KindPut, ClientID: math.MaxUint64, Seq: math.MaxUint64,
		Put: &Put{Key: strings.Repeat("k", 70000), Value: bytes.Repeat([]byte("v"), 70000), Session: session.ID(math.MaxUint64)}}
	b, err := NewCodec().Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	if extra := len(b) - len(c.Put.Key) - len(c.Put.Value); extra > putOverhead {
		t.Errorf("a put needs %d bytes besides its key and value, putOverhead is %d", extra, putOverhead)
	}
	if cap(b) != putOverhead+len(c.Put.Key)+len(c.Put.Value) {
		t.Errorf("the buffer grew past its first allocation: cap %d", cap(b))
	}
}
