package rpc

import (
	"fmt"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// NewHandle returns the msgpack handle every connection uses (its
// settings are part of the wire format). Users that encode a body
// themselves, for Client.NotifyEncoded, encode it with a handle from here.
// A Handle is read-only once in use; each Server, Client and transport
// makes its own so no package-level state is shared.
func NewHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true // []byte as msgpack bin, strings as str
	h.RawToString = false
	// MaxInitLen stays at the codec's default, which caps the first
	// allocation a length prefix can cause at about 256 KiB; a collection
	// claiming more grows only as its elements actually arrive. (A small
	// cap makes every large bin value grow in quadratic copies.)
	h.MaxDepth = 64
	return h
}

// codecs hands out msgpack encoders (with a scratch buffer) and decoders
// for goroutines that encode or decode outside a connection's reader.
type codecs struct {
	h    *codec.MsgpackHandle
	pool sync.Pool // of *encState
	decs sync.Pool // of *decoder
}

type encState struct {
	enc *codec.Encoder
	buf []byte
}

func newCodecs() *codecs {
	h := NewHandle()
	p := &codecs{h: h}
	p.pool.New = func() any {
		s := &encState{buf: make([]byte, 0, 512)}
		s.enc = codec.NewEncoderBytes(&s.buf, h)
		return s
	}
	p.decs.New = func() any { return newDecoder(h) }
	return p
}

func (p *codecs) getDecoder() *decoder  { return p.decs.Get().(*decoder) }
func (p *codecs) putDecoder(d *decoder) { p.decs.Put(d) }

// MsgpackAppender is implemented by message types on the hot path that
// encode themselves (see internal/msgp): AppendMsgpack appends exactly
// the bytes go-msgpack would write for the value, several times faster.
type MsgpackAppender interface {
	AppendMsgpack(b []byte) []byte
}

// MsgpackDecoder is implemented by message types on the hot path that
// decode themselves. DecodeMsgpack decodes a whole body into the receiver,
// a zero value, and reports whether it could; on false the receiver is
// left zero and the body is decoded by go-msgpack, which has the last word
// on every form the hand-written decoder does not know.
type MsgpackDecoder interface {
	DecodeMsgpack(body []byte) bool
}

// encode encodes v (nil: an empty body) and returns the state holding the
// result in s.buf; release it with put.
func (p *codecs) encode(v any) (*encState, error) {
	s := p.pool.Get().(*encState)
	s.buf = s.buf[:0]
	if v == nil {
		return s, nil
	}
	if a, ok := v.(MsgpackAppender); ok {
		s.buf = a.AppendMsgpack(s.buf)
		return s, nil
	}
	s.enc.ResetBytes(&s.buf)
	if err := SafeEncode(s.enc, v); err != nil {
		p.put(s)
		return nil, err
	}
	return s, nil
}

func (p *codecs) put(s *encState) {
	if cap(s.buf) > 256<<10 {
		s.buf = make([]byte, 0, 512) // don't keep a huge buffer pinned
	}
	p.pool.Put(s)
}

// SafeEncode encodes v with enc, turning a panic inside the codec into an
// error.
func SafeEncode(enc *codec.Encoder, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("encoding %T: panic: %v", v, r)
		}
	}()
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encoding %T: %w", v, err)
	}
	return nil
}

// decoder decodes bodies; one per reading goroutine.
type decoder struct {
	dec *codec.Decoder
}

func newDecoder(h *codec.MsgpackHandle) *decoder {
	return &decoder{dec: codec.NewDecoderBytes([]byte{}, h)}
}

// decode decodes body into v, which must be a fresh (zero) value: the codec
// reuses the backing arrays of slices it finds, and decoded data must never
// alias a read buffer. It never panics; trailing bytes are an error.
func (d *decoder) decode(body []byte, v any) (err error) {
	if v == nil {
		if len(body) != 0 {
			return fmt.Errorf("%w: %d unexpected body bytes", ErrProtocol, len(body))
		}
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoding %T: panic: %v", v, r)
		}
	}()
	if len(body) == 0 {
		return nil // an empty body is the zero value (a nil request or response)
	}
	if md, ok := v.(MsgpackDecoder); ok && md.DecodeMsgpack(body) {
		return nil
	}
	d.dec.ResetBytes(body)
	if err := d.dec.Decode(v); err != nil {
		return fmt.Errorf("decoding %T: %w", v, err)
	}
	if n := d.dec.NumBytesRead(); n != len(body) {
		return fmt.Errorf("decoding %T: %d trailing bytes after %d", v, len(body)-n, n)
	}
	return nil
}
