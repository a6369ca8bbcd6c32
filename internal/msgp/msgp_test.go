package msgp_test

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/lockd/lockd/internal/msgp"
	"github.com/lockd/lockd/rpc"
)

// reflective encodes v with go-msgpack and rpc's settings.
func reflective(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, rpc.NewHandle()).Encode(v); err != nil {
		t.Fatalf("encoding %T: %v", v, err)
	}
	return b
}

var ints = []int64{0, 1, 31, 32, 127, 128, 255, 256, 32767, 32768, 65535, 65536,
	math.MaxInt32, math.MaxInt32 + 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
	-1, -31, -32, -33, -127, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64}

var lengths = []int{0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536}

func TestAppendWritesWhatGoMsgpackWrites(t *testing.T) {
	for _, v := range ints {
		if got, want := msgp.AppendInt(nil, v), reflective(t, v); !bytes.Equal(got, want) {
			t.Errorf("AppendInt(%d) = %x, go-msgpack %x", v, got, want)
		}
		if v < 0 {
			continue
		}
		if got, want := msgp.AppendUint(nil, uint64(v)), reflective(t, uint64(v)); !bytes.Equal(got, want) {
			t.Errorf("AppendUint(%d) = %x, go-msgpack %x", v, got, want)
		}
	}
	if got, want := msgp.AppendUint(nil, math.MaxUint64), reflective(t, uint64(math.MaxUint64)); !bytes.Equal(got, want) {
		t.Errorf("AppendUint(max) = %x, go-msgpack %x", got, want)
	}
	for _, n := range lengths {
		s := strings.Repeat("k", n)
		if got, want := msgp.AppendString(nil, s), reflective(t, s); !bytes.Equal(got, want) {
			t.Errorf("AppendString(len %d) = %x…, go-msgpack %x…", n, head(got), head(want))
		}
		v := bytes.Repeat([]byte{7}, n)
		if got, want := msgp.AppendBytes(nil, v), reflective(t, v); !bytes.Equal(got, want) {
			t.Errorf("AppendBytes(len %d) = %x…, go-msgpack %x…", n, head(got), head(want))
		}
		if n > 65536/2 {
			continue // containers of that size take long to build; the header forms are covered below
		}
		m := make(map[int]bool, n)
		for i := range n {
			m[i] = true
		}
		if got, want := msgp.AppendMapHeader(nil, n), reflective(t, m); !bytes.Equal(got, want[:len(got)]) {
			t.Errorf("AppendMapHeader(%d) = %x, go-msgpack %x…", n, got, head(want))
		}
		a := make([]bool, n)
		if got, want := msgp.AppendArrayHeader(nil, n), reflective(t, a); !bytes.Equal(got, want[:len(got)]) {
			t.Errorf("AppendArrayHeader(%d) = %x, go-msgpack %x…", n, got, head(want))
		}
	}
	if got, want := msgp.AppendArrayHeader(nil, 70000), []byte{0xdd, 0, 1, 0x11, 0x70}; !bytes.Equal(got, want) {
		t.Errorf("AppendArrayHeader(70000) = %x, want %x", got, want)
	}
	if got, want := msgp.AppendBytes(nil, nil), reflective(t, []byte(nil)); !bytes.Equal(got, want) {
		t.Errorf("AppendBytes(nil) = %x, go-msgpack %x", got, want)
	}
	for _, v := range []bool{false, true} {
		if got, want := msgp.AppendBool(nil, v), reflective(t, v); !bytes.Equal(got, want) {
			t.Errorf("AppendBool(%v) = %x, go-msgpack %x", v, got, want)
		}
	}
	if got, want := msgp.AppendNil(nil), reflective(t, nil); !bytes.Equal(got, want) {
		t.Errorf("AppendNil = %x, go-msgpack %x", got, want)
	}
}

func head(b []byte) []byte { return b[:min(len(b), 6)] }

func TestReaderReadsWhatGoMsgpackWrites(t *testing.T) {
	for _, v := range ints {
		r := msgp.NewReader(reflective(t, v))
		if got := r.Int64(); got != v || !r.Done() {
			t.Errorf("Int64 of %d read %d (done %v)", v, got, r.Done())
		}
		r = msgp.NewReader(reflective(t, v))
		got := r.Uint64()
		if v < 0 {
			if !r.Failed() {
				t.Errorf("Uint64 of %d read %d, want a failure", v, got)
			}
		} else if got != uint64(v) || !r.Done() {
			t.Errorf("Uint64 of %d read %d (done %v)", v, got, r.Done())
		}
		// Every width go-msgpack could write for an unsigned value.
		if v >= 0 {
			r = msgp.NewReader(reflective(t, uint64(v)))
			if got := r.Int64(); got != v || !r.Done() {
				t.Errorf("Int64 of uint %d read %d (done %v)", v, got, r.Done())
			}
		}
	}
	r := msgp.NewReader(reflective(t, uint64(math.MaxUint64)))
	if r.Int64(); !r.Failed() {
		t.Errorf("Int64 of MaxUint64 did not fail")
	}
	r = msgp.NewReader(reflective(t, uint64(300)))
	if r.Uint(255); !r.Failed() {
		t.Errorf("Uint(255) of 300 did not fail")
	}
	for _, n := range lengths {
		s := strings.Repeat("k", n)
		r := msgp.NewReader(reflective(t, s))
		if got := r.Str(); got != s || !r.Done() {
			t.Errorf("String of len %d read len %d (done %v)", n, len(got), r.Done())
		}
		v := bytes.Repeat([]byte{7}, n)
		r = msgp.NewReader(reflective(t, v))
		if got := r.Bytes(); !bytes.Equal(got, v) || got == nil || !r.Done() {
			t.Errorf("Bytes of len %d read len %d (done %v)", n, len(got), r.Done())
		}
	}
	r = msgp.NewReader(reflective(t, map[string]any{"a": true, "b": nil}))
	if n := r.MapHeader(); n != 2 {
		t.Fatalf("MapHeader read %d, want 2", n)
	}
	for range 2 {
		switch k := string(r.Key()); k {
		case "a":
			if !r.Bool() {
				t.Errorf("a read false")
			}
		case "b":
			if !r.IsNil() {
				t.Errorf("b is not nil")
			}
		default:
			t.Errorf("unexpected key %q", k)
		}
	}
	if !r.Done() {
		t.Errorf("map not read to its end")
	}
}

func TestReaderNeverReadsACopyOfItsInputThatAliasesIt(t *testing.T) {
	in := msgp.AppendBytes(msgp.AppendString(nil, "key"), []byte("value"))
	r := msgp.NewReader(in)
	s, v := r.Str(), r.Bytes()
	for i := range in {
		in[i] = 0
	}
	if s != "key" || string(v) != "value" {
		t.Fatalf("read %q %q, which changed with the input", s, v)
	}
}

func TestReaderFailsOnWhatItDoesNotHandle(t *testing.T) {
	cases := map[string]struct {
		in   []byte
		read func(r *msgp.Reader)
	}{
		"empty":                  {nil, func(r *msgp.Reader) { r.Int64() }},
		"int cut short":          {[]byte{0xd3, 1, 2}, func(r *msgp.Reader) { r.Int64() }},
		"str claims too much":    {[]byte{0xda, 0xff, 0xff, 'a'}, func(r *msgp.Reader) { r.Str() }},
		"bin claims too much":    {[]byte{0xc6, 0xff, 0xff, 0xff, 0xff}, func(r *msgp.Reader) { r.Bytes() }},
		"bin read as str":        {[]byte{0xc4, 1, 'a'}, func(r *msgp.Reader) { r.Str() }},
		"str read as bin":        {[]byte{0xa1, 'a'}, func(r *msgp.Reader) { r.Bytes() }},
		"map claims too much":    {[]byte{0xdf, 0xff, 0xff, 0xff, 0xff, 1}, func(r *msgp.Reader) { r.MapHeader() }},
		"array claims too much":  {[]byte{0xdc, 0, 3, 1, 1}, func(r *msgp.Reader) { r.ArrayHeader() }},
		"array read as map":      {[]byte{0x91, 1}, func(r *msgp.Reader) { r.MapHeader() }},
		"float read as int":      {[]byte{0xcb, 0, 0, 0, 0, 0, 0, 0, 0}, func(r *msgp.Reader) { r.Int64() }},
		"nil read as bool":       {[]byte{0xc0}, func(r *msgp.Reader) { r.Bool() }},
		"read after a failure":   {[]byte{0xc1, 0x01}, func(r *msgp.Reader) { r.Bool(); r.Int64() }},
		"negative read as uint":  {[]byte{0xff}, func(r *msgp.Reader) { r.Uint64() }},
		"nil read as str":        {[]byte{0xc0}, func(r *msgp.Reader) { r.Str() }},
		"int64 out of int range": {[]byte{0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}, func(r *msgp.Reader) { r.Int64() }},
	}
	for name, c := range cases {
		r := msgp.NewReader(c.in)
		c.read(&r)
		if !r.Failed() || r.Done() {
			t.Errorf("%s: the read did not fail", name)
		}
	}
	r := msgp.NewReader([]byte{0x01, 0x02})
	if r.Int64(); r.Done() {
		t.Errorf("Done with a byte left over")
	}
}

// FuzzReader reads arbitrary bytes every way a decoder might: it must not
// panic, and a value read must be re-encodable to the bytes it came from
// when the input was in canonical form.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0x82, 0xa1, 'k', 0xc4, 1, 'v', 0xa1, 'n', 0xd1, 1, 0})
	f.Add([]byte{0x93, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 0xc3, 0xc0})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		for kind := range 8 {
			r := msgp.NewReader(in)
			for i := 0; i < 64 && !r.Failed() && !r.Done(); i++ {
				switch (kind + i) % 8 {
				case 0:
					r.MapHeader()
				case 1:
					r.ArrayHeader()
				case 2:
					r.Key()
				case 3:
					_ = r.Str()
				case 4:
					r.Bytes()
				case 5:
					r.Int64()
				case 6:
					r.Uint64()
				case 7:
					if !r.IsNil() {
						r.Bool()
					}
				}
			}
		}
		r := msgp.NewReader(in)
		if v := r.Int64(); r.Done() && !bytes.Equal(msgp.AppendInt(nil, v), in) {
			// Not canonical (a wider form than needed) is fine; it must at
			// least read back the same value.
			r2 := msgp.NewReader(msgp.AppendInt(nil, v))
			if r2.Int64() != v {
				t.Fatalf("Int64 %d does not round-trip", v)
			}
		}
	})
}
