// Package msgp writes and reads the msgpack forms used by lockd's
// hand-written codecs for the few messages on the hot path (a put's
// request and answer, the Raft batches between nodes). go-msgpack finds
// its way through every value by reflection, which cost 15–18 % of the
// CPU of a client and 10–15 % of a node's under a put load.
//
// Invariants:
//
//  1. The Append functions produce exactly the bytes go-msgpack produces
//     with rpc.NewHandle's settings for the same Go value, so each side
//     of a connection may use either codec. Tests compare the two.
//  2. A Reader never panics and never reads past its input, whatever the
//     bytes. It accepts only the forms it knows (the ones the Append
//     functions write, plus every integer width); on anything else it
//     fails, and its caller decodes the body again with go-msgpack, which
//     then decides. So a hand-written decoder can only be faster, never
//     different.
//  3. Nothing read aliases the input: strings and byte slices are copies,
//     as go-msgpack's are.
package msgp

import (
	"encoding/binary"
	"math"
)

// Format bytes (the msgpack specification).
const (
	fixMapMin   = 0x80
	fixArrayMin = 0x90
	fixStrMin   = 0xa0
	nilByte     = 0xc0
	falseByte   = 0xc2
	trueByte    = 0xc3
	bin8        = 0xc4
	bin16       = 0xc5
	bin32       = 0xc6
	uint8b      = 0xcc
	uint16b     = 0xcd
	uint32b     = 0xce
	uint64b     = 0xcf
	int8b       = 0xd0
	int16b      = 0xd1
	int32b      = 0xd2
	int64b      = 0xd3
	str8        = 0xd9
	str16       = 0xda
	str32       = 0xdb
	array16     = 0xdc
	array32     = 0xdd
	map16       = 0xde
	map32       = 0xdf
)

// AppendNil appends nil.
func AppendNil(b []byte) []byte { return append(b, nilByte) }

// AppendBool appends true or false.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, trueByte)
	}
	return append(b, falseByte)
}

// AppendMapHeader appends the header of a map of n pairs.
func AppendMapHeader(b []byte, n int) []byte {
	return appendHeader(b, n, fixMapMin, 16, 0, map16, map32)
}

// AppendArrayHeader appends the header of an array of n elements.
func AppendArrayHeader(b []byte, n int) []byte {
	return appendHeader(b, n, fixArrayMin, 16, 0, array16, array32)
}

// appendHeader appends the smallest header for length n among the forms
// given: fixed (lengths below fixCap, in fixMin's low bits; fixCap 0: no
// fixed form), b8 (0: none), b16 and b32.
func appendHeader(b []byte, n int, fixMin byte, fixCap int, b8, b16, b32 byte) []byte {
	switch {
	case n < fixCap:
		return append(b, fixMin|byte(n))
	case b8 != 0 && n < 256:
		return append(b, b8, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, b16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, b32), uint32(n))
	}
}

// AppendString appends s as a msgpack str.
func AppendString(b []byte, s string) []byte {
	return append(appendHeader(b, len(s), fixStrMin, 32, str8, str16, str32), s...)
}

// AppendBytes appends v as a msgpack bin (nil as nil).
func AppendBytes(b []byte, v []byte) []byte {
	if v == nil {
		return append(b, nilByte)
	}
	return append(appendHeader(b, len(v), 0, 0, bin8, bin16, bin32), v...)
}

// AppendUint appends v in the smallest unsigned form.
func AppendUint(b []byte, v uint64) []byte {
	switch {
	case v <= math.MaxInt8:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, uint8b, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, uint16b), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, uint32b), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, uint64b), v)
	}
}

// AppendInt appends v in the smallest signed form (go-msgpack writes
// positive signed values in signed forms too).
func AppendInt(b []byte, v int64) []byte {
	switch {
	case v > math.MaxInt8:
		switch {
		case v <= math.MaxInt16:
			return binary.BigEndian.AppendUint16(append(b, int16b), uint16(v))
		case v <= math.MaxInt32:
			return binary.BigEndian.AppendUint32(append(b, int32b), uint32(v))
		default:
			return binary.BigEndian.AppendUint64(append(b, int64b), uint64(v))
		}
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, int8b, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, int16b), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, int32b), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, int64b), uint64(v))
	}
}

// Reader reads msgpack values from a byte slice. The first value it
// cannot read (wrong form, cut short, out of range) makes it fail; every
// later read returns a zero value, and Done reports the failure. So a
// decoder reads all its fields and checks once.
type Reader struct {
	b   []byte
	off int
	bad bool
}

// NewReader returns a reader of b.
func NewReader(b []byte) Reader { return Reader{b: b} }

// Fail marks the input as one the caller does not handle.
func (r *Reader) Fail() { r.bad = true }

// Failed reports whether a read failed.
func (r *Reader) Failed() bool { return r.bad }

// Done reports whether every read succeeded and the input is used up.
func (r *Reader) Done() bool { return !r.bad && r.off == len(r.b) }

// peek returns the next format byte.
func (r *Reader) peek() (byte, bool) {
	if r.bad || r.off >= len(r.b) {
		r.bad = true
		return 0, false
	}
	return r.b[r.off], true
}

// take returns the next n bytes.
func (r *Reader) take(n int) []byte {
	if r.bad || n < 0 || len(r.b)-r.off < n {
		r.bad = true
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *Reader) u8() uint64 {
	if p := r.take(1); p != nil {
		return uint64(p[0])
	}
	return 0
}

func (r *Reader) u16() uint64 {
	if p := r.take(2); p != nil {
		return uint64(binary.BigEndian.Uint16(p))
	}
	return 0
}

func (r *Reader) u32() uint64 {
	if p := r.take(4); p != nil {
		return uint64(binary.BigEndian.Uint32(p))
	}
	return 0
}

func (r *Reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// IsNil reports whether the next value is nil, and if so skips it.
func (r *Reader) IsNil() bool {
	c, ok := r.peek()
	if ok && c == nilByte {
		r.off++
		return true
	}
	return false
}

// MapHeader reads a map header and returns its number of pairs; every
// pair takes at least two bytes, so a count the input cannot hold fails.
func (r *Reader) MapHeader() int {
	return r.container(fixMapMin, map16, map32, 2)
}

// ArrayHeader reads an array header and returns its number of elements;
// a count the input cannot hold (one byte each at least) fails.
func (r *Reader) ArrayHeader() int {
	return r.container(fixArrayMin, array16, array32, 1)
}

func (r *Reader) container(fix, b16, b32 byte, minSize int) int {
	n := r.length(0xf0, fix, 0, b16, b32)
	if r.bad || n > uint64((len(r.b)-r.off)/minSize) {
		r.bad = true
		return 0
	}
	return int(n)
}

// length reads a header in one of the given forms (fixed: the format
// byte's bits outside fixMask give the length, under fixMin; a zero byte
// stands for a form the type does not have) and returns the length.
func (r *Reader) length(fixMask, fixMin, b8, b16, b32 byte) uint64 {
	c, ok := r.peek()
	if !ok {
		return 0
	}
	r.off++
	switch {
	case fixMask != 0 && c&fixMask == fixMin:
		return uint64(c &^ fixMask)
	case b8 != 0 && c == b8:
		return r.u8()
	case c == b16:
		return r.u16()
	case c == b32:
		return r.u32()
	}
	r.bad = true
	return 0
}

// payload returns the next n bytes (not copied).
func (r *Reader) payload(n uint64) []byte {
	if r.bad || n > uint64(len(r.b)-r.off) {
		r.bad = true
		return nil
	}
	return r.take(int(n))
}

// rawString reads a str's bytes (not copied).
func (r *Reader) rawString() []byte {
	return r.payload(r.length(0xe0, fixStrMin, str8, str16, str32))
}

// Key reads a map key, a str, without copying it: compare it, don't keep it.
func (r *Reader) Key() []byte { return r.rawString() }

// Str reads a str.
func (r *Reader) Str() string { return string(r.rawString()) }

// Bytes reads a bin into a new slice; nil stays nil.
func (r *Reader) Bytes() []byte {
	if r.IsNil() {
		return nil
	}
	p := r.payload(r.length(0, 0, bin8, bin16, bin32))
	if r.bad {
		return nil
	}
	out := make([]byte, len(p))
	copy(out, p)
	return out
}

// Bool reads true or false.
func (r *Reader) Bool() bool {
	c, ok := r.peek()
	if !ok {
		return false
	}
	switch c {
	case trueByte:
		r.off++
		return true
	case falseByte:
		r.off++
		return false
	}
	r.bad = true
	return false
}

// integer reads an integer of any width: its magnitude and whether it is
// negative (v then holds the two's-complement int64).
func (r *Reader) integer() (v uint64, neg bool) {
	c, ok := r.peek()
	if !ok {
		return 0, false
	}
	r.off++
	switch {
	case c <= 0x7f:
		return uint64(c), false
	case c >= 0xe0:
		return uint64(int64(int8(c))), true
	}
	switch c {
	case uint8b:
		return r.u8(), false
	case uint16b:
		return r.u16(), false
	case uint32b:
		return r.u32(), false
	case uint64b:
		return r.u64(), false
	case int8b:
		x := int64(int8(r.u8()))
		return uint64(x), x < 0
	case int16b:
		x := int64(int16(r.u16()))
		return uint64(x), x < 0
	case int32b:
		x := int64(int32(r.u32()))
		return uint64(x), x < 0
	case int64b:
		x := int64(r.u64())
		return uint64(x), x < 0
	}
	r.bad = true
	return 0, false
}

// Uint reads a non-negative integer no larger than max.
func (r *Reader) Uint(max uint64) uint64 {
	v, neg := r.integer()
	if neg || v > max {
		r.bad = true
		return 0
	}
	return v
}

// Uint64 reads a non-negative integer.
func (r *Reader) Uint64() uint64 { return r.Uint(math.MaxUint64) }

// Int64 reads an integer that fits an int64.
func (r *Reader) Int64() int64 {
	v, neg := r.integer()
	if !neg && v > math.MaxInt64 {
		r.bad = true
		return 0
	}
	return int64(v)
}
