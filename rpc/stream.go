package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// maxCredit bounds the credit a peer may grant one stream; more is a
// protocol violation (it could only come from a broken peer).
const maxCredit = 1 << 20

// stream is one stream's state, on either end. Flow control: each side
// may have at most the other side's window of data messages in flight;
// the receiver grants credit back as its application consumes messages.
// The connection's reader goroutine therefore never waits for a stream:
// a message arriving on a full queue is a protocol violation.
type stream struct {
	id     uint64
	method Method
	c      *conn
	ctx    context.Context // ends the stream's blocking operations

	// Receive side. recvq holds bodies the reader copied out of its
	// buffer; its capacity is the local window.
	recvq   chan []byte
	peerEnd chan struct{} // closed after the last message the peer will send is in recvq
	endOnce sync.Once
	endErr  error // io.EOF for a clean end; set before peerEnd closes

	recvMu   sync.Mutex // serializes Recv; protects consumed
	consumed int        // messages taken since the last credit grant

	// Send side.
	creditc   chan struct{} // cap 1: credit was added
	mu        sync.Mutex    // protects credit, sendDone, sendErr
	credit    int
	sendDone  bool  // CloseSend was called
	sendErr   error // set when sending is no longer possible
	terminate chan struct{}
	termOnce  sync.Once
}

func newStream(c *conn, id uint64, m Method, ctx context.Context) *stream {
	return &stream{
		id: id, method: m, c: c, ctx: ctx,
		recvq:     make(chan []byte, c.localWindow),
		peerEnd:   make(chan struct{}),
		creditc:   make(chan struct{}, 1),
		credit:    c.peerWindow,
		terminate: make(chan struct{}),
	}
}

// deliver is called by the reader goroutine with a data frame's body. It
// never blocks; a full queue means the peer ignored flow control.
func (s *stream) deliver(body []byte) error {
	select {
	case <-s.peerEnd:
		return fmt.Errorf("%w: data on stream %d after its end", ErrProtocol, s.id)
	default:
	}
	b := make([]byte, len(body))
	copy(b, body)
	select {
	case s.recvq <- b:
		return nil
	default:
		return fmt.Errorf("%w: stream %d got more than its window of %d messages", ErrProtocol, s.id, cap(s.recvq))
	}
}

// end marks that the peer will send no more data: err is io.EOF for a
// clean end, or why the stream failed.
func (s *stream) end(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		close(s.peerEnd)
	})
}

// finish ends both directions: no more sending, and Recv returns err once
// the queue is drained.
func (s *stream) finish(err error) {
	s.end(err)
	s.termOnce.Do(func() {
		s.mu.Lock()
		if s.sendErr == nil {
			s.sendErr = err
			if errors.Is(err, io.EOF) {
				s.sendErr = ErrStreamClosed
			}
		}
		s.mu.Unlock()
		close(s.terminate)
	})
}

// addCredit is called by the reader goroutine for a credit frame.
func (s *stream) addCredit(body []byte) error {
	n, k := binary.Uvarint(body)
	if k != len(body) || n == 0 || n > maxCredit {
		return fmt.Errorf("%w: bad credit frame on stream %d", ErrProtocol, s.id)
	}
	s.mu.Lock()
	s.credit += int(n)
	over := s.credit > maxCredit
	s.mu.Unlock()
	if over {
		return fmt.Errorf("%w: stream %d granted more than %d credits", ErrProtocol, s.id, maxCredit)
	}
	select {
	case s.creditc <- struct{}{}:
	default:
	}
	return nil
}

// send sends one data message, waiting for credit.
func (s *stream) send(v any) error {
	for {
		s.mu.Lock()
		switch {
		case s.sendErr != nil:
			err := s.sendErr
			s.mu.Unlock()
			return err
		case s.sendDone:
			s.mu.Unlock()
			return fmt.Errorf("%w: send after CloseSend", ErrStreamClosed)
		case s.credit > 0:
			s.credit--
			s.mu.Unlock()
			return s.c.send(s.ctx, Header{Type: FrameStreamData, ID: s.id, Method: s.method}, nil, v)
		}
		s.mu.Unlock()
		select {
		case <-s.creditc:
		case <-s.terminate:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
}

// closeSend tells the peer no more data follows.
func (s *stream) closeSend() error {
	s.mu.Lock()
	if s.sendDone || s.sendErr != nil {
		s.mu.Unlock()
		return nil
	}
	s.sendDone = true
	s.mu.Unlock()
	return s.c.w.write(s.ctx, Header{Type: FrameStreamEnd, ID: s.id}, nil, nil)
}

// recv decodes the next message into v; it returns io.EOF after a clean
// end, or the stream's error.
func (s *stream) recv(v any) error {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	var b []byte
	select {
	case b = <-s.recvq:
	default:
		select {
		case b = <-s.recvq:
		case <-s.peerEnd:
			select {
			case b = <-s.recvq:
			default:
				return s.endErr
			}
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
	d := s.c.codecs.getDecoder()
	err := d.decode(b, v)
	s.c.codecs.putDecoder(d)
	s.consumed++
	if s.consumed >= max(1, cap(s.recvq)/2) {
		var buf [binary.MaxVarintLen32]byte
		n := binary.PutUvarint(buf[:], uint64(s.consumed))
		s.consumed = 0
		select {
		case <-s.peerEnd:
			// The peer sends no more; it needs no credit.
		default:
			// A failed write means the connection is dying; the stream's
			// end reports that on the next Recv, this message is good.
			_ = s.c.w.write(s.ctx, Header{Type: FrameCredit, ID: s.id}, buf[:n], nil)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: stream %d message: %w", ErrBadRequest, s.id, err)
	}
	return nil
}

// ClientStream is the client's end of a stream: Send and CloseSend carry
// messages to the handler, Recv takes what the handler sends. The stream
// lives until the handler returns, the context given to Client.Stream
// ends, or Close. Send and Recv may be used from two goroutines, but each
// from one at a time.
type ClientStream struct {
	s     *stream
	cc    *clientConn
	stop  func() bool // stops the context watcher
	close sync.Once
}

// Send sends a message to the handler, waiting for flow-control credit.
func (cs *ClientStream) Send(v any) error { return cs.cc.wrap(cs.s.method, cs.s.send(v)) }

// CloseSend tells the handler that no more messages follow (its Recv
// returns io.EOF).
func (cs *ClientStream) CloseSend() error { return cs.cc.wrap(cs.s.method, cs.s.closeSend()) }

// Recv decodes the handler's next message into v. It returns io.EOF when
// the handler returned nil, or the handler's error.
func (cs *ClientStream) Recv(v any) error {
	err := cs.s.recv(v)
	if errors.Is(err, io.EOF) {
		cs.release()
		return io.EOF
	}
	if err != nil {
		select {
		case <-cs.s.terminate:
			cs.release()
		default:
		}
	}
	return cs.cc.wrap(cs.s.method, err)
}

// Close abandons the stream (the handler's context is cancelled) unless it
// already ended; it always releases the stream's resources.
func (cs *ClientStream) Close() error {
	cs.cc.cancelStream(cs.s, fmt.Errorf("%w: closed by the client", ErrStreamClosed))
	cs.release()
	return nil
}

func (cs *ClientStream) release() {
	cs.close.Do(func() {
		cs.stop()
		cs.cc.releaseSlot()
	})
}

// ServerStream is the handler's end of a stream.
type ServerStream struct {
	s *stream
}

// Send sends a message to the client, waiting for flow-control credit: a
// slow client makes Send wait, never the server buffer.
func (ss *ServerStream) Send(v any) error { return ss.s.send(v) }

// Recv decodes the client's next message into v; io.EOF after the client's
// CloseSend.
func (ss *ServerStream) Recv(v any) error { return ss.s.recv(v) }
