package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// lingerTimeout bounds how long a connection closed with an error frame
// keeps reading (and discarding) so the frame is not lost to a reset.
const lingerTimeout = 500 * time.Millisecond

// lingerBytes bounds what is discarded while lingering.
const lingerBytes = 1 << 20

// conn is what both ends of a connection share: the socket, the writer,
// the limits agreed in the handshake, and how it dies.
type conn struct {
	nc     net.Conn
	addr   string // the other side's address, for errors and logs
	w      *frameWriter
	fr     *frameReader
	dec    *decoder // the reader goroutine's
	codecs *codecs
	table  *ErrorTable
	logger hclog.Logger

	peerMaxFrame int // the largest body the other side accepts
	peerWindow   int // stream messages the other side buffers per stream
	localWindow  int // stream messages this side buffers per stream

	done      chan struct{} // closed by close
	closeOnce sync.Once
	errMu     sync.Mutex // protects err
	err       error      // why the connection closed

	closingOnce sync.Once
	closing     chan struct{} // closed once an error frame was sent before closing
	closingErr  error         // what was sent; set before closing closes
}

func (c *conn) init(nc net.Conn, fr *frameReader, cs *codecs, table *ErrorTable, logger hclog.Logger, writeLimit int, writeTimeout time.Duration) {
	c.nc = nc
	c.addr = nc.RemoteAddr().String()
	c.fr = fr
	c.codecs = cs
	c.dec = newDecoder(cs.h)
	c.table = table
	c.logger = logger
	c.done = make(chan struct{})
	c.closing = make(chan struct{})
	c.w = newFrameWriter(nc, writeLimit, writeTimeout, c.done, func(err error) {
		c.close(fmt.Errorf("writing to %s: %w", c.addr, err))
	})
}

// close closes the connection at once and records why; the first reason
// wins. Safe to call from any goroutine, more than once.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		c.errMu.Lock()
		c.err = err
		c.errMu.Unlock()
		c.w.stop(fmt.Errorf("%w: %w", ErrConnClosed, err))
		close(c.done)
		_ = c.nc.Close()
	})
}

// closingReason is the error closeWithError sent; only after closing is closed.
func (c *conn) closingReason() error { return c.closingErr }

// closeErr is why the connection closed (nil while open).
func (c *conn) closeErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

func (c *conn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// send encodes v as the body of a frame and queues it. A body larger than
// the other side's limit is refused here with ErrFrameTooLarge, and the
// connection stays.
func (c *conn) send(ctx context.Context, h Header, prefix []byte, v any) error {
	es, err := c.codecs.encode(v)
	if err != nil {
		return err
	}
	defer c.codecs.put(es)
	if n := len(prefix) + len(es.buf); n > c.peerMaxFrame {
		return fmt.Errorf("%w: %s body of %d bytes exceeds the %d-byte limit of %s", ErrFrameTooLarge, h.Type, n, c.peerMaxFrame, c.addr)
	}
	return c.w.write(ctx, h, prefix, es.buf)
}

// sendError answers call id with err (id 0: about the whole connection).
func (c *conn) sendError(ctx context.Context, id uint64, m Method, err error) error {
	return c.send(ctx, Header{Type: FrameError, ID: id, Method: m}, nil, c.table.toWire(err))
}

// closeWithError tells the other side why the connection ends with an
// error frame, half-closes, and lets the reader discard what is still
// arriving for a short while so the frame is not lost to a reset. The
// reader goroutine closes the connection for good, or a timer does once
// the linger time is up.
func (c *conn) closeWithError(err error) {
	c.closingOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), lingerTimeout)
		defer cancel()
		if c.sendError(ctx, 0, 0, err) == nil {
			c.w.drain(ctx)
		}
		c.closingErr = err
		close(c.closing)
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		// The reader clears the read deadline when it finishes a frame
		// body (frameReader.next), which can undo the one just set: a
		// server Close then waited forever for a reader blocked on a peer
		// that kept its end open (seen as a 10-minute hang of the server
		// tests under -race). So the connection is also closed outright
		// once the linger time is up.
		time.AfterFunc(2*lingerTimeout, func() { c.close(err) })
	})
}

// linger discards incoming bytes until the other side closes or the
// linger deadline passes, then closes the connection with err.
func (c *conn) linger(err error) {
	_, _ = io.CopyN(io.Discard, c.nc, lingerBytes)
	c.close(err)
}

// isFramingError reports whether a read error means the other side broke
// the protocol (as opposed to going away).
func isFramingError(err error) bool {
	return errors.Is(err, ErrProtocol) || errors.Is(err, ErrFrameTooLarge) || errors.Is(err, io.ErrUnexpectedEOF)
}

// isQuietClose reports whether a read error is an ordinary end of a
// connection that needs no log line above debug.
func isQuietClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
