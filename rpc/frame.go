package rpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// HeaderSize is the size of the fixed frame header in bytes.
const HeaderSize = 16

// DefaultMaxFrameSize bounds a frame's body unless configured otherwise.
const DefaultMaxFrameSize = 4 << 20

// minMaxFrameSize is the smallest frame limit a node may configure: the
// handshake and error frames must always fit.
const minMaxFrameSize = 4 << 10

// FrameType says what a frame carries.
type FrameType uint8

// The frame types. The numbers are part of the protocol: never reuse one.
const (
	// FrameHello opens a connection (client → server): version and cluster.
	FrameHello FrameType = iota + 1
	// FrameHelloAck accepts a Hello (server → client) with the server's limits.
	FrameHelloAck
	// FrameRequest starts a call or a stream; Method says which.
	FrameRequest
	// FrameResponse ends a call or stream successfully.
	FrameResponse
	// FrameError ends a call or stream with an error; with id 0 it is about
	// the whole connection, which the sender closes right after it.
	FrameError
	// FrameCancel abandons a call or stream (client → server).
	FrameCancel
	// FrameStreamData is one message of a stream, in either direction.
	FrameStreamData
	// FrameStreamEnd half-closes a stream: the sender sends no more data.
	FrameStreamEnd
	// FrameCredit lets the other side send more stream messages; the body is
	// the count as a uvarint.
	FrameCredit
	frameTypeEnd
)

var frameNames = [...]string{
	FrameHello: "hello", FrameHelloAck: "hello-ack", FrameRequest: "request",
	FrameResponse: "response", FrameError: "error", FrameCancel: "cancel",
	FrameStreamData: "stream-data", FrameStreamEnd: "stream-end", FrameCredit: "credit",
}

func (t FrameType) String() string {
	if t > 0 && t < frameTypeEnd {
		return frameNames[t]
	}
	return fmt.Sprintf("FrameType(%d)", uint8(t))
}

// Frame flags.
const (
	// FlagStream on a request opens a stream instead of a unary call.
	FlagStream uint8 = 1 << iota
	// FlagOneway on a request asks for no response at all.
	FlagOneway
	flagsKnown = FlagStream | FlagOneway
)

// Method numbers a registered method. The numbers are part of the protocol
// between the users of this package; 0 is never a method.
type Method uint16

// Method numbers 1..63 are reserved for the Raft peer transport (package
// rpc/peer), which serves these two; other users of a shared Server take
// numbers from FirstUserMethod on. They are defined here, with the
// protocol, so that every number in use is listed in one package.
const (
	// MethodRaftMessages carries a batch of Raft messages (one-way).
	MethodRaftMessages Method = 1
	// MethodRaftSnapshot streams a snapshot to a peer.
	MethodRaftSnapshot Method = 2
	// FirstUserMethod is the first method number free for other services.
	FirstUserMethod Method = 64
)

// Header is a frame's fixed header, big-endian on the wire:
//
//	0..4   body length (not counting the header)
//	4      frame type
//	5      flags
//	6..8   method
//	8..16  call or stream id
type Header struct {
	Length uint32
	Type   FrameType
	Flags  uint8
	Method Method
	ID     uint64
}

// put writes h into b[:HeaderSize].
func (h Header) put(b []byte) {
	binary.BigEndian.PutUint32(b[0:], h.Length)
	b[4] = byte(h.Type)
	b[5] = h.Flags
	binary.BigEndian.PutUint16(b[6:], uint16(h.Method))
	binary.BigEndian.PutUint64(b[8:], h.ID)
}

func parseHeader(b []byte) Header {
	return Header{
		Length: binary.BigEndian.Uint32(b[0:]),
		Type:   FrameType(b[4]),
		Flags:  b[5],
		Method: Method(binary.BigEndian.Uint16(b[6:])),
		ID:     binary.BigEndian.Uint64(b[8:]),
	}
}

// ErrFrameTooLarge: a frame's body exceeds the receiver's limit.
var ErrFrameTooLarge = errors.New("frame too large")

// ErrProtocol: the peer broke the framing or the protocol; the connection
// is closed.
var ErrProtocol = errors.New("protocol violation")

// valid checks a header that arrived from the network against the rules of
// its type. max is the receiver's body limit.
func (h Header) valid(max int) error {
	if h.Type == 0 || h.Type >= frameTypeEnd {
		return fmt.Errorf("%w: unknown frame type %d", ErrProtocol, h.Type)
	}
	if int64(h.Length) > int64(max) {
		return fmt.Errorf("%w: %s frame body of %d bytes exceeds the %d-byte limit", ErrFrameTooLarge, h.Type, h.Length, max)
	}
	if h.Flags&^flagsKnown != 0 {
		return fmt.Errorf("%w: unknown flags %#x on %s frame", ErrProtocol, h.Flags, h.Type)
	}
	if h.Flags != 0 && h.Type != FrameRequest {
		return fmt.Errorf("%w: flags %#x on %s frame", ErrProtocol, h.Flags, h.Type)
	}
	if h.Flags&FlagStream != 0 && h.Flags&FlagOneway != 0 {
		return fmt.Errorf("%w: request both stream and one-way", ErrProtocol)
	}
	switch h.Type {
	case FrameHello, FrameHelloAck:
		if h.ID != 0 || h.Method != 0 {
			return fmt.Errorf("%w: %s frame with id %d method %d", ErrProtocol, h.Type, h.ID, h.Method)
		}
	case FrameRequest:
		if h.ID == 0 || h.Method == 0 {
			return fmt.Errorf("%w: request with id %d method %d", ErrProtocol, h.ID, h.Method)
		}
	case FrameError:
		// id 0 is a connection-level error.
	case FrameCancel, FrameStreamEnd:
		if h.ID == 0 || h.Length != 0 {
			return fmt.Errorf("%w: %s frame with id %d and %d body bytes", ErrProtocol, h.Type, h.ID, h.Length)
		}
	case FrameCredit:
		if h.ID == 0 || h.Length == 0 || h.Length > binary.MaxVarintLen32 {
			return fmt.Errorf("%w: credit frame with id %d and %d body bytes", ErrProtocol, h.ID, h.Length)
		}
	default:
		if h.ID == 0 {
			return fmt.Errorf("%w: %s frame with id 0", ErrProtocol, h.Type)
		}
	}
	return nil
}

// smallBody is the body size up to which a frameReader reuses one buffer;
// larger bodies get their own allocation, grown as bytes arrive, so a
// header promising megabytes costs nothing until the bytes come.
const smallBody = 64 << 10

// frameReader reads frames from a buffered stream. It is used by one
// goroutine at a time.
type frameReader struct {
	r   *bufio.Reader
	max int
	// bodyTimeout bounds how long the rest of a frame may take once its
	// header arrived (0: no bound); deadline is the connection's.
	bodyTimeout time.Duration
	deadline    func(time.Time) error
	buf         []byte
	hdr         [HeaderSize]byte
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 32<<10), max: max}
}

// next reads one frame. The body is valid until the next call. Errors
// wrap ErrProtocol or ErrFrameTooLarge when the peer broke the framing,
// io.ErrUnexpectedEOF for a truncated frame, or the read error.
func (fr *frameReader) next() (Header, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return Header{}, nil, err
	}
	h := parseHeader(fr.hdr[:])
	if err := h.valid(fr.max); err != nil {
		return h, nil, err
	}
	n := int(h.Length)
	if n > fr.r.Buffered() && fr.bodyTimeout > 0 && fr.deadline != nil {
		_ = fr.deadline(time.Now().Add(fr.bodyTimeout))
		defer func() { _ = fr.deadline(time.Time{}) }()
	}
	if n <= smallBody {
		if cap(fr.buf) < smallBody {
			fr.buf = make([]byte, smallBody)
		}
		body := fr.buf[:n]
		if _, err := io.ReadFull(fr.r, body); err != nil {
			return h, nil, truncated(h, err)
		}
		return h, body, nil
	}
	body := make([]byte, 0, smallBody)
	for len(body) < n {
		step := min(n-len(body), smallBody)
		if cap(body)-len(body) < step {
			body = append(body[:cap(body)], make([]byte, min(cap(body), n-cap(body)))...)[:len(body)]
		}
		if _, err := io.ReadFull(fr.r, body[len(body):len(body)+step]); err != nil {
			return h, nil, truncated(h, err)
		}
		body = body[:len(body)+step]
	}
	return h, body, nil
}

func truncated(h Header, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s frame of %d bytes cut short: %w", h.Type, h.Length, err)
}

// appendFrame appends a header and body to b.
func appendFrame(b []byte, h Header, body []byte) []byte {
	h.Length = uint32(len(body))
	var hdr [HeaderSize]byte
	h.put(hdr[:])
	b = append(b, hdr[:]...)
	return append(b, body...)
}
