package fsm

import (
	"encoding/binary"
	"math"

	"github.com/lockd/lockd/session"
)

// A put is most of a write load, and go-msgpack handles a Command by
// reflection (about 2 µs to encode and 2.5 µs to decode one; every node
// decodes every command). So puts have a hand-written path that writes
// exactly the bytes go-msgpack writes for them (a map whose keys are in
// go-msgpack's order: c, k, p, q, v, and k, s, v inside the put; empty
// fields left out) and reads back exactly that shape. Anything else,
// including a put encoded some other valid way, takes the generic path.
// TestPutFastPathMatchesTheGenericCodec and FuzzPutFastPath hold the two
// paths to the same bytes and the same results.

func isPlainPut(c *Command) bool {
	return c.Kind == KindPut && c.Put != nil && c.SessionCreate == nil && c.SessionDestroy == nil &&
		c.SessionExpire == nil && c.SessionCheckpoint == nil && c.LockAcquire == nil && c.LockRelease == nil &&
		c.LockCancel == nil && c.Delete == nil && c.Txn == nil
}

// appendPut appends the msgpack encoding of a plain put command.
// putOverhead bounds what appendPut writes besides the key and value
// bytes: map and string headers, field names and five integers of at most
// 9 bytes each, so one allocation always holds a put.
const putOverhead = 80

func appendPut(b []byte, c *Command) []byte {
	n := 3
	if c.ClientID != 0 {
		n++
	}
	if c.Seq != 0 {
		n++
	}
	b = append(b, 0x80|byte(n))
	if c.ClientID != 0 {
		b = appendUint(append(b, 0xa1, 'c'), c.ClientID)
	}
	b = appendUint(append(b, 0xa1, 'k'), uint64(c.Kind))
	b = append(b, 0xa1, 'p')
	p := c.Put
	if p.Session != 0 {
		b = append(b, 0x83)
	} else {
		b = append(b, 0x82)
	}
	b = appendStr(append(b, 0xa1, 'k'), p.Key)
	if p.Session != 0 {
		b = appendUint(append(b, 0xa1, 's'), uint64(p.Session))
	}
	b = appendBin(append(b, 0xa1, 'v'), p.Value)
	if c.Seq != 0 {
		b = appendUint(append(b, 0xa1, 'q'), c.Seq)
	}
	return appendUint(append(b, 0xa1, 'v'), uint64(c.Version))
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 0x80:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func appendBin(b []byte, v []byte) []byte {
	if v == nil {
		return append(b, 0xc0)
	}
	switch n := len(v); {
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, v...)
}

// putReader reads the shape appendPut writes; any deviation sets bad.
type putReader struct {
	b   []byte
	bad bool
}

func (r *putReader) byte() byte {
	if r.bad || len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *putReader) take(n int) []byte {
	if r.bad || n < 0 || len(r.b) < n {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *putReader) be(n int) uint64 {
	var v uint64
	for _, c := range r.take(n) {
		v = v<<8 | uint64(c)
	}
	return v
}

func (r *putReader) uint() uint64 {
	switch c := r.byte(); {
	case c < 0x80:
		return uint64(c)
	case c == 0xcc:
		return r.be(1)
	case c == 0xcd:
		return r.be(2)
	case c == 0xce:
		return r.be(4)
	case c == 0xcf:
		return r.be(8)
	}
	r.bad = true
	return 0
}

// key reads a one-letter key.
func (r *putReader) key() byte {
	if r.byte() != 0xa1 {
		r.bad = true
	}
	return r.byte()
}

func (r *putReader) str() string {
	var n int
	switch c := r.byte(); {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9:
		n = int(r.be(1))
	case c == 0xda:
		n = int(r.be(2))
	case c == 0xdb:
		n = int(r.be(4))
	default:
		r.bad = true
	}
	return string(r.take(n))
}

func (r *putReader) bin() []byte {
	var n int
	switch c := r.byte(); c {
	case 0xc0:
		return nil
	case 0xc4:
		n = int(r.be(1))
	case 0xc5:
		n = int(r.be(2))
	case 0xc6:
		n = int(r.be(4))
	default:
		r.bad = true
	}
	v := r.take(n)
	if r.bad {
		return nil
	}
	// A copy: the state machine keeps the value, and b is the log entry's.
	return append(make([]byte, 0, n), v...)
}

// decodePut reads a put in exactly the shape appendPut writes; ok is
// false for anything else (which the generic decoder then reads).
func decodePut(b []byte) (c *Command, ok bool) {
	r := &putReader{b: b}
	h := r.byte()
	if h < 0x83 || h > 0x85 {
		return nil, false
	}
	c = &Command{}
	var last byte
	for range int(h & 0x0f) {
		k := r.key()
		if r.bad || k <= last {
			return nil, false
		}
		last = k
		switch k {
		case 'c':
			c.ClientID = r.uint()
		case 'k':
			v := r.uint()
			if v != uint64(KindPut) {
				return nil, false
			}
			c.Kind = KindPut
		case 'p':
			c.Put = r.put()
		case 'q':
			c.Seq = r.uint()
		case 'v':
			v := r.uint()
			if v > math.MaxUint8 {
				return nil, false
			}
			c.Version = uint8(v)
		default:
			return nil, false
		}
	}
	// Left out means zero, as the generic decoder has it; but a zero
	// written out is not the shape appendPut writes.
	if r.bad || len(r.b) != 0 || c.Kind != KindPut || c.Put == nil ||
		(h&0x0f) != byte(3+b2i(c.ClientID != 0)+b2i(c.Seq != 0)) {
		return nil, false
	}
	return c, true
}

func (r *putReader) put() *Put {
	h := r.byte()
	if h != 0x82 && h != 0x83 {
		r.bad = true
		return nil
	}
	p := &Put{}
	if r.key() != 'k' {
		r.bad = true
	}
	p.Key = r.str()
	if h == 0x83 {
		if r.key() != 's' {
			r.bad = true
		}
		p.Session = session.ID(r.uint())
		if p.Session == 0 {
			r.bad = true
		}
	}
	if r.key() != 'v' {
		r.bad = true
	}
	p.Value = r.bin()
	return p
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
