package rpc

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

var errTooManyFiles = syscall.EMFILE

// serverConn is one accepted connection. Its goroutines: serve (the
// reader, which owns the connection's life), the writer's flusher, one per
// call in progress (bounded by MaxConcurrentCalls), and the idle timer.
type serverConn struct {
	conn
	srv *Server

	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	mu  sync.Mutex // protects raw, up, stopped, active, frames, idleSeen, idleClosed
	raw net.Conn   // the accepted socket, until the handshake is done
	up  bool       // handshake done; conn is initialized
	// stopped: shutdown came before serve took the socket (the server
	// closed between accepting the connection and serving it); serve
	// then closes it at once instead of serving it forever.
	stopped bool
	active  map[uint64]*activeCall
	// The idle check and the reader agree under mu: a frame is either
	// counted before the check (no idle close) or sees idleClosed and is
	// discarded, so no request is handled once the connection was declared
	// idle, and a client may safely retry what it had sent.
	frames     uint64
	idleSeen   uint64
	idleClosed bool

	idleTimer *time.Timer
	handlers  sync.WaitGroup // call goroutines and the flusher
}

// activeCall is a call or stream in progress.
type activeCall struct {
	cancel   context.CancelFunc
	stream   *stream
	canceled bool // by the client: it wants no answer (guarded by serverConn.mu)
}

// serve runs the connection from handshake to close.
func (sc *serverConn) serve(nc net.Conn) {
	cfg := &sc.srv.cfg
	remote := nc.RemoteAddr().String()
	logger := sc.srv.logger.With("remote", remote)
	sc.mu.Lock()
	sc.raw = nc
	stopped := sc.stopped
	sc.mu.Unlock()
	if stopped {
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	if cfg.TLS != nil {
		tc := tls.Server(nc, cfg.TLS)
		if err := tc.HandshakeContext(sc.srv.ctx); err != nil {
			logger.Warn("rpc connection refused: TLS handshake failed", "error", err)
			_ = nc.Close()
			return
		}
		nc = tc
	}
	fr := newFrameReader(nc, cfg.MaxFrameSize)
	sc.init(nc, fr, sc.srv.codecs, cfg.Errors, logger, cfg.WriteQueueBytes, cfg.WriteTimeout)
	sc.localWindow = cfg.StreamWindow
	sc.peerMaxFrame = maxHelloSize

	hi, version, err := readHello(fr, sc.dec, serverPolicy{clusterID: cfg.ClusterID, anyCluster: cfg.AcceptUnnamedClients})
	if err != nil {
		var he *handshakeError
		if errors.As(err, &he) {
			logger.Warn("rpc connection refused", "error", err)
			sc.closeWithError(he)
			sc.linger(err)
			return
		}
		logger.Debug("rpc connection closed during handshake", "error", err)
		sc.close(err)
		return
	}
	sc.peerMaxFrame = int(min(hi.MaxFrame, 1<<30))
	sc.peerWindow = int(min(hi.Window, maxWindow))
	ack := helloAck{
		Version: version, ClusterID: cfg.ClusterID, Name: cfg.Name, MaxFrame: uint32(cfg.MaxFrameSize),
		MaxConcurrent: uint32(cfg.MaxConcurrentCalls), Window: uint32(cfg.StreamWindow),
	}
	if err := sc.send(sc.srv.ctx, Header{Type: FrameHelloAck}, nil, ack); err != nil {
		logger.Debug("rpc connection closed during handshake", "error", err)
		sc.close(err)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	fr.bodyTimeout, fr.deadline = cfg.FrameTimeout, nc.SetReadDeadline
	sc.ctx, sc.cancel = context.WithCancel(sc.srv.ctx)
	sc.logger = logger.With("client", hi.Name)
	sc.mu.Lock()
	sc.up = true
	sc.mu.Unlock()
	sc.handlers.Add(1)
	go func() {
		defer sc.handlers.Done()
		sc.w.run()
	}()
	sc.idleTimer = time.AfterFunc(cfg.IdleTimeout, sc.checkIdle)
	sc.logger.Debug("rpc connection accepted", "version", version)

	err = sc.readLoop()
	sc.end(err)
}

// end closes the connection after the reader stopped with err, fails what
// is in progress and waits for the handlers.
func (sc *serverConn) end(err error) {
	sc.idleTimer.Stop()
	select {
	case <-sc.closing:
		// We sent an error frame; the other side was told why.
		sc.linger(err)
	default:
		switch {
		case isFramingError(err) || isTimeout(err):
			sc.logger.Warn("rpc connection closed: bad input from client", "error", err)
			sc.closeWithError(err)
			sc.linger(err)
		case isQuietClose(err):
			sc.logger.Debug("rpc connection closed", "error", err)
			sc.close(err)
		default:
			sc.logger.Info("rpc connection closed", "error", err)
			sc.close(err)
		}
	}
	sc.cancel()
	sc.mu.Lock()
	for _, ac := range sc.active {
		ac.cancel()
		if ac.stream != nil {
			ac.stream.finish(fmt.Errorf("%w: %w", ErrConnClosed, err))
		}
	}
	sc.mu.Unlock()
	sc.handlers.Wait()
}

// cancelCalls cancels the context of every call in progress (the server
// is closing: its handlers stop now, not when the reader ends).
func (sc *serverConn) cancelCalls() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, ac := range sc.active {
		ac.cancel()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// shutdown closes the connection from outside the reader: before the
// handshake by closing the socket, after it with an error frame.
func (sc *serverConn) shutdown(err error) {
	sc.mu.Lock()
	up, raw := sc.up, sc.raw
	if raw == nil {
		sc.stopped = true
	}
	sc.mu.Unlock()
	if !up {
		if raw != nil {
			_ = raw.Close()
		}
		return
	}
	sc.closeWithError(err)
}

// checkIdle runs on the idle timer: a connection with no call in progress
// and no frame since the last check is closed.
func (sc *serverConn) checkIdle() {
	if sc.isClosed() {
		return
	}
	sc.mu.Lock()
	if len(sc.active) > 0 || sc.frames != sc.idleSeen {
		sc.idleSeen = sc.frames
		sc.mu.Unlock()
		sc.idleTimer.Reset(sc.srv.cfg.IdleTimeout)
		return
	}
	sc.idleClosed = true
	sc.mu.Unlock()
	sc.logger.Debug("rpc connection idle; closing", "idle_timeout", sc.srv.cfg.IdleTimeout)
	sc.closeWithError(fmt.Errorf("%w: no call for %v", ErrIdle, sc.srv.cfg.IdleTimeout))
}

// readLoop reads frames until an error; after an error frame was sent it
// only discards.
func (sc *serverConn) readLoop() error {
	for {
		h, body, err := sc.fr.next()
		if err != nil {
			return err
		}
		sc.mu.Lock()
		sc.frames++
		idle := sc.idleClosed
		sc.mu.Unlock()
		if idle {
			<-sc.closing // the idle check is sending the error frame
		}
		select {
		case <-sc.closing:
			// The frame reader may have cleared the linger deadline.
			_ = sc.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
			return sc.closingReason()
		default:
		}
		if err := sc.handleFrame(h, body); err != nil {
			return err
		}
	}
}

func (sc *serverConn) streamOf(id uint64) *stream {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if ac := sc.active[id]; ac != nil {
		return ac.stream
	}
	return nil
}

// handleFrame acts on one frame; an error closes the connection. Frames
// for calls that already ended are ignored: they cross the answer.
func (sc *serverConn) handleFrame(h Header, body []byte) error {
	switch h.Type {
	case FrameRequest:
		return sc.onRequest(h, body)
	case FrameCancel:
		sc.mu.Lock()
		if ac := sc.active[h.ID]; ac != nil {
			ac.canceled = true
			ac.cancel()
			if ac.stream != nil {
				ac.stream.finish(fmt.Errorf("%w: cancelled by the client", context.Canceled))
			}
		}
		sc.mu.Unlock()
	case FrameStreamData:
		if st := sc.streamOf(h.ID); st != nil {
			return st.deliver(body)
		}
	case FrameStreamEnd:
		if st := sc.streamOf(h.ID); st != nil {
			st.end(io.EOF)
		}
	case FrameCredit:
		if st := sc.streamOf(h.ID); st != nil {
			return st.addCredit(body)
		}
	case FrameError:
		if h.ID == 0 {
			var we wireError
			if err := sc.dec.decode(body, &we); err != nil {
				return fmt.Errorf("%w: undecodable error frame: %w", ErrProtocol, err)
			}
			return fmt.Errorf("client closed the connection: %w", sc.table.fromWire(we, sc.addr, 0))
		}
		return fmt.Errorf("%w: error frame for call %d from a client", ErrProtocol, h.ID)
	default:
		return fmt.Errorf("%w: unexpected %s frame from a client", ErrProtocol, h.Type)
	}
	return nil
}

// onRequest starts a call or stream. Errors that concern only the request
// are answered; an undecodable request closes the connection.
func (sc *serverConn) onRequest(h Header, body []byte) error {
	timeoutMicros, n := binary.Uvarint(body)
	if n <= 0 {
		return fmt.Errorf("%w: request %d: bad deadline prefix", ErrProtocol, h.ID)
	}
	payload := body[n:]
	oneway := h.Flags&FlagOneway != 0
	isStream := h.Flags&FlagStream != 0
	answer := func(err error) error {
		if !oneway {
			_ = sc.sendError(sc.ctx, h.ID, h.Method, err)
		}
		return nil
	}
	// A client that does not read its answers stops being read: no new
	// work starts while its write queue is full.
	if err := sc.w.waitRoom(sc.ctx); err != nil {
		return err
	}
	d := sc.srv.methods[h.Method] // immutable once serving
	if d == nil {
		sc.logger.Debug("rpc call to an unknown method", "method", h.Method)
		return answer(fmt.Errorf("%w: method %d is not served here", ErrUnknownMethod, h.Method))
	}
	if isStream != (d.kind == kindStream) {
		return answer(fmt.Errorf("%w: method %s called as a stream %v, is a stream %v", ErrBadRequest, d.name, isStream, d.kind == kindStream))
	}
	if d.check != nil {
		if err := d.check(payload); err != nil {
			return fmt.Errorf("%w: request %d for %s: %w", ErrProtocol, h.ID, d.name, err)
		}
	}
	req := d.newReq()
	if err := sc.dec.decode(payload, req); err != nil {
		return fmt.Errorf("%w: request %d for %s: undecodable body: %w", ErrProtocol, h.ID, d.name, err)
	}
	if d.inline && !isStream {
		resp, err := sc.callUnary(d, sc.ctx, req)
		if !oneway {
			sc.reply(h, resp, err)
		}
		return nil
	}
	sc.mu.Lock()
	if sc.active[h.ID] != nil {
		sc.mu.Unlock()
		return fmt.Errorf("%w: call id %d reused while in progress", ErrProtocol, h.ID)
	}
	if len(sc.active) >= sc.srv.cfg.MaxConcurrentCalls {
		sc.mu.Unlock()
		return answer(fmt.Errorf("%w: %d calls in progress on this connection (the limit)", ErrOverloaded, sc.srv.cfg.MaxConcurrentCalls))
	}
	// The call's context is not a child of the connection's: that would
	// register it under the connection's lock, shared by every call on
	// it, twice per call. end cancels the calls in progress itself.
	var ctx context.Context
	var cancel context.CancelFunc
	if timeoutMicros > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), time.Duration(min(timeoutMicros, 1<<40))*time.Microsecond)
	} else {
		ctx, cancel = context.WithCancel(context.Background())
	}
	ac := &activeCall{cancel: cancel}
	if isStream {
		ac.stream = newStream(&sc.conn, h.ID, h.Method, ctx)
	}
	sc.active[h.ID] = ac
	sc.mu.Unlock()
	sc.w.inflight.Add(1)
	sc.handlers.Add(1)
	sc.srv.workers.run(func() { sc.run(ctx, h, d, req, ac, oneway) })
	return nil
}

// run runs one handler on its own goroutine and answers.
func (sc *serverConn) run(ctx context.Context, h Header, d *methodDesc, req any, ac *activeCall, oneway bool) {
	defer sc.handlers.Done()
	var resp any
	var err error
	if ac.stream != nil {
		err = sc.callStream(d, ctx, req, &ServerStream{s: ac.stream})
		if err == nil {
			ac.stream.finish(io.EOF)
		} else {
			ac.stream.finish(err)
		}
	} else {
		resp, err = sc.callUnary(d, ctx, req)
	}
	sc.mu.Lock()
	delete(sc.active, h.ID)
	canceled := ac.canceled
	sc.mu.Unlock()
	ac.cancel()
	defer sc.w.inflight.Add(-1)
	if canceled || oneway {
		return
	}
	sc.reply(h, resp, err)
}

// reply answers request h with resp or err.
func (sc *serverConn) reply(h Header, resp any, err error) {
	if err == nil {
		err = sc.send(sc.ctx, Header{Type: FrameResponse, ID: h.ID, Method: h.Method}, nil, resp)
		if err == nil || sc.isClosed() {
			return
		}
		if !errors.Is(err, ErrFrameTooLarge) {
			err = fmt.Errorf("%w: response: %w", ErrInternal, err)
		}
	}
	_ = sc.sendError(sc.ctx, h.ID, h.Method, err)
}

// callUnary runs a unary handler; a panic becomes ErrInternal (the stack
// goes to the log, not to the client).
func (sc *serverConn) callUnary(d *methodDesc, ctx context.Context, req any) (resp any, err error) {
	defer sc.recoverHandler(d, &err)
	return d.unary(ctx, req)
}

func (sc *serverConn) callStream(d *methodDesc, ctx context.Context, req any, st *ServerStream) (err error) {
	defer sc.recoverHandler(d, &err)
	return d.stream(ctx, req, st)
}

func (sc *serverConn) recoverHandler(d *methodDesc, err *error) {
	if r := recover(); r != nil {
		sc.logger.Error("rpc handler panicked", "method", d.name, "panic", r, "stack", string(debug.Stack()))
		*err = fmt.Errorf("%w: handler %s panicked: %v", ErrInternal, d.name, r)
	}
}

// rateLog lets one log line through per second and counts the rest.
type rateLog struct {
	mu    sync.Mutex // protects last and count
	last  time.Time
	count uint64
}

// tick counts an event; ok says whether to log now, n how many events
// the line stands for.
func (r *rateLog) tick() (n uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if now := time.Now(); now.Sub(r.last) >= time.Second {
		r.last = now
		n, r.count = r.count, 0
		return n, true
	}
	return 0, false
}
