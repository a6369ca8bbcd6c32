package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// clientConn is one connection of a Client. Its goroutines: readLoop (which
// owns the connection's life and completes calls) and the writer's flusher.
type clientConn struct {
	conn
	client *Client
	nextID atomic.Uint64
	slots  chan struct{} // calls and streams in progress, up to the server's limit

	mu      sync.Mutex // protects pending and goAway
	pending map[uint64]*call
	goAway  bool // the server said it is closing; no new calls
}

// call is a unary call or stream waiting for its end.
type call struct {
	method Method
	resp   any        // unary: where the response is decoded
	done   chan error // unary: cap 1, gets exactly one result
	stream *stream    // streams
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan error, 1)} }}

// usable reports whether new calls may use the connection.
func (cc *clientConn) usable() bool {
	if cc.isClosed() {
		return false
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return !cc.goAway
}

// wrap names the address and method in an error of this connection.
func (cc *clientConn) wrap(m Method, err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return err // names address and method already
	}
	return fmt.Errorf("rpc %s method %d: %w", cc.addr, m, err)
}

// take removes and returns the call with id, or nil.
func (cc *clientConn) take(id uint64) *call {
	cc.mu.Lock()
	c := cc.pending[id]
	if c != nil {
		delete(cc.pending, id)
	}
	cc.mu.Unlock()
	return c
}

func (cc *clientConn) lookup(id uint64) *call {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.pending[id]
}

func (cc *clientConn) acquireSlot(ctx context.Context) error {
	if cc.tryAcquireSlot() {
		return nil
	}
	select {
	case cc.slots <- struct{}{}:
		cc.w.inflight.Add(1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-cc.done:
		return cc.connErr()
	}
}

// tryAcquireSlot takes a call slot if one is free, without waiting.
func (cc *clientConn) tryAcquireSlot() bool {
	select {
	case cc.slots <- struct{}{}:
		cc.w.inflight.Add(1)
		return true
	default:
		return false
	}
}

func (cc *clientConn) releaseSlot() {
	cc.w.inflight.Add(-1)
	<-cc.slots
}

// connErr is what calls get once the connection died.
func (cc *clientConn) connErr() error {
	err := cc.closeErr()
	if err == nil {
		err = errors.New("closing")
	}
	return fmt.Errorf("%w: %w", ErrConnClosed, err)
}

// deadlinePrefix encodes the time left until ctx's deadline in
// microseconds (0: none).
func deadlinePrefix(ctx context.Context, buf []byte) []byte {
	var us uint64
	if dl, ok := ctx.Deadline(); ok {
		us = uint64(max(time.Until(dl).Microseconds(), 1))
	}
	n := binary.PutUvarint(buf, us)
	return buf[:n]
}

// timeoutPrefix is deadlinePrefix for a call that also ends after
// timeout: the server is told whichever end comes first.
func timeoutPrefix(ctx context.Context, timeout time.Duration, buf []byte) []byte {
	us := uint64(max(timeout.Microseconds(), 1))
	if dl, ok := ctx.Deadline(); ok {
		us = min(us, uint64(max(time.Until(dl).Microseconds(), 1)))
	}
	n := binary.PutUvarint(buf, us)
	return buf[:n]
}

// register adds c under a fresh id.
func (cc *clientConn) register(c *call) (uint64, error) {
	id := cc.nextID.Add(1)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.isClosed() {
		return 0, cc.connErr()
	}
	cc.pending[id] = c
	return id, nil
}

// call runs one unary call on this connection.
func (cc *clientConn) call(ctx context.Context, m Method, req, resp any, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return cc.wrap(m, err)
	}
	if timeout > 0 && !cc.tryAcquireSlot() {
		// Waiting for a slot must end with the timeout too: take the
		// plain way, under a derived context.
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return cc.call(tctx, m, req, resp, 0)
	}
	if timeout <= 0 {
		if err := cc.acquireSlot(ctx); err != nil {
			return cc.wrap(m, err)
		}
	}
	defer cc.releaseSlot()
	es, err := cc.codecs.encode(req)
	if err != nil {
		return cc.wrap(m, fmt.Errorf("%w: %w", ErrBadRequest, err))
	}
	var pbuf [binary.MaxVarintLen64]byte
	var prefix []byte
	if timeout > 0 {
		prefix = timeoutPrefix(ctx, timeout, pbuf[:])
	} else {
		prefix = deadlinePrefix(ctx, pbuf[:])
	}
	if n := len(prefix) + len(es.buf); n > cc.peerMaxFrame {
		cc.codecs.put(es)
		return cc.wrap(m, fmt.Errorf("%w: request of %d bytes exceeds the server's %d-byte limit", ErrFrameTooLarge, n, cc.peerMaxFrame))
	}
	c := callPool.Get().(*call)
	c.method, c.resp = m, resp
	id, err := cc.register(c)
	if err != nil {
		cc.codecs.put(es)
		c.resp = nil
		callPool.Put(c)
		return cc.wrap(m, err)
	}
	err = cc.w.write(ctx, Header{Type: FrameRequest, Method: m, ID: id}, prefix, es.buf)
	cc.codecs.put(es)
	if err != nil {
		if cc.take(id) == nil {
			// The connection died and failed the call meanwhile.
			err = <-c.done
		}
		c.resp = nil
		callPool.Put(c)
		if ctx.Err() != nil {
			return cc.wrap(m, ctx.Err())
		}
		return cc.wrap(m, fmt.Errorf("%w: %w", ErrConnClosed, err))
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	giveUp := func(why error) error {
		if cc.take(id) != nil {
			cc.sendCancel(id)
			return cc.wrap(m, why)
		}
		// The reader is completing the call; its result is on the way.
		return <-c.done
	}
	select {
	case err = <-c.done:
	case <-ctx.Done():
		err = giveUp(ctx.Err())
	case <-expired:
		err = giveUp(fmt.Errorf("no answer within %v: %w", timeout, context.DeadlineExceeded))
	}
	c.resp = nil
	callPool.Put(c)
	return err
}

// sendCancel tells the server a call or stream is abandoned. Best effort.
func (cc *clientConn) sendCancel(id uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = cc.w.write(ctx, Header{Type: FrameCancel, ID: id}, nil, nil)
}

// notify sends a one-way request.
func (cc *clientConn) notify(ctx context.Context, m Method, req any) error {
	var pbuf [binary.MaxVarintLen64]byte
	id := cc.nextID.Add(1)
	err := cc.send(ctx, Header{Type: FrameRequest, Flags: FlagOneway, Method: m, ID: id}, deadlinePrefix(ctx, pbuf[:]), req)
	return cc.wrap(m, err)
}

// openStream starts a stream; it holds a call slot until released.
func (cc *clientConn) openStream(ctx context.Context, m Method, req any) (*ClientStream, error) {
	if err := cc.acquireSlot(ctx); err != nil {
		return nil, cc.wrap(m, err)
	}
	st := newStream(&cc.conn, 0, m, ctx)
	c := &call{method: m, stream: st}
	id, err := cc.register(c)
	if err != nil {
		cc.releaseSlot()
		return nil, cc.wrap(m, err)
	}
	st.id = id
	var pbuf [binary.MaxVarintLen64]byte
	if err := cc.send(ctx, Header{Type: FrameRequest, Flags: FlagStream, Method: m, ID: id}, deadlinePrefix(ctx, pbuf[:]), req); err != nil {
		cc.take(id)
		cc.releaseSlot()
		var oe *net.OpError
		if ctx.Err() == nil && (errors.As(err, &oe) || errors.Is(err, net.ErrClosed) || cc.isClosed()) {
			// The connection died under us (as call says): a retry on
			// another one is safe, the request never got through whole.
			err = fmt.Errorf("%w: %w", ErrConnClosed, err)
		}
		return nil, cc.wrap(m, err)
	}
	cs := &ClientStream{s: st, cc: cc}
	cs.stop = context.AfterFunc(ctx, func() { cc.cancelStream(st, ctx.Err()) })
	return cs, nil
}

// cancelStream abandons a stream that has not ended: the server is told,
// and local operations fail with err.
func (cc *clientConn) cancelStream(st *stream, err error) {
	if cc.take(st.id) != nil {
		cc.sendCancel(st.id)
	}
	st.finish(err)
}

// readLoop reads the server's frames until the connection dies, then
// fails every call in flight.
func (cc *clientConn) readLoop() {
	var err error
	for {
		var h Header
		var body []byte
		h, body, err = cc.fr.next()
		if err != nil {
			break
		}
		if err = cc.handleFrame(h, body); err != nil {
			break
		}
	}
	var re *RemoteError
	switch {
	case errors.As(err, &re):
		cc.logger.Info("rpc connection closed by the server", "error", err)
		cc.close(err)
	case isFramingError(err):
		cc.logger.Warn("rpc connection closed: bad input from server", "error", err)
		cc.closeWithError(err)
		cc.close(err)
	case isQuietClose(err):
		cc.logger.Debug("rpc connection closed", "error", err)
		cc.close(err)
	default:
		cc.logger.Info("rpc connection closed", "error", err)
		cc.close(err)
	}
	cc.failAll()
}

// failAll ends every pending call and stream with the connection's error.
func (cc *clientConn) failAll() {
	err := cc.connErr()
	cc.mu.Lock()
	pending := cc.pending
	cc.pending = map[uint64]*call{}
	cc.mu.Unlock()
	for _, c := range pending {
		if c.stream != nil {
			c.stream.finish(err)
		} else {
			c.done <- err
		}
	}
}

func (cc *clientConn) handleFrame(h Header, body []byte) error {
	switch h.Type {
	case FrameResponse:
		c := cc.take(h.ID)
		switch {
		case c == nil:
		case c.stream != nil:
			c.stream.finish(io.EOF)
		default:
			var err error
			if c.resp != nil {
				err = cc.dec.decode(body, c.resp)
			} else if len(body) != 0 {
				err = cc.dec.decode(body, new(any))
			}
			if err != nil {
				err = fmt.Errorf("rpc %s method %d: undecodable response: %w", cc.addr, c.method, err)
			}
			c.done <- err
		}
	case FrameError:
		var we wireError
		if err := cc.dec.decode(body, &we); err != nil {
			return fmt.Errorf("%w: undecodable error frame: %w", ErrProtocol, err)
		}
		if h.ID == 0 {
			cc.mu.Lock()
			cc.goAway = true
			cc.mu.Unlock()
			return cc.table.fromWire(we, cc.addr, 0)
		}
		c := cc.take(h.ID)
		switch {
		case c == nil:
		case c.stream != nil:
			c.stream.finish(cc.table.fromWire(we, cc.addr, c.method))
		default:
			c.done <- cc.table.fromWire(we, cc.addr, c.method)
		}
	case FrameStreamData:
		if c := cc.lookup(h.ID); c != nil && c.stream != nil {
			return c.stream.deliver(body)
		}
	case FrameStreamEnd:
		if c := cc.lookup(h.ID); c != nil && c.stream != nil {
			c.stream.end(io.EOF)
		}
	case FrameCredit:
		if c := cc.lookup(h.ID); c != nil && c.stream != nil {
			return c.stream.addCredit(body)
		}
	default:
		return fmt.Errorf("%w: unexpected %s frame from the server", ErrProtocol, h.Type)
	}
	return nil
}
