package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Server defaults.
const (
	DefaultMaxConcurrentCalls = 256
	DefaultStreamWindow       = 32
	DefaultMaxConns           = 4096
	DefaultIdleTimeout        = 5 * time.Minute
	DefaultHandshakeTimeout   = 5 * time.Second
	DefaultFrameTimeout       = 30 * time.Second
	DefaultWriteTimeout       = 30 * time.Second
	// maxWindow bounds the stream window either side may announce.
	maxWindow = 1 << 12
)

// ServerConfig configures a Server. Validate fills defaults.
type ServerConfig struct {
	// ClusterID must match the client's; a client of another cluster is
	// refused during the handshake.
	ClusterID string
	// AcceptUnnamedClients also admits clients that name no cluster (a
	// user's client that does not care); peers always name theirs.
	AcceptUnnamedClients bool
	// Name describes this server to clients ("node 1"). Optional.
	Name string
	// TLS, if set, is used for every connection: see ServerTLS.
	TLS *tls.Config

	// MaxFrameSize bounds a frame body this server accepts. Default 4 MiB.
	MaxFrameSize int
	// MaxConcurrentCalls bounds the calls and streams in progress on one
	// connection; more are answered with ErrOverloaded. Default 256.
	MaxConcurrentCalls int
	// StreamWindow is how many messages a stream may have in flight
	// towards the server before it grants more credit. Default 32.
	StreamWindow int
	// MaxConns bounds open connections; more are closed at once. Default 4096.
	MaxConns int
	// IdleTimeout closes a connection that has had no call in progress and
	// no frame arriving for this long (closed between one and two times
	// it). Default 5 min.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake plus the hello. Default 5 s.
	HandshakeTimeout time.Duration
	// FrameTimeout bounds how long the rest of a frame may take once its
	// header arrived. Default 30 s.
	FrameTimeout time.Duration
	// WriteTimeout closes a connection on which one write makes no
	// progress for this long. Default 30 s.
	WriteTimeout time.Duration
	// WriteQueueBytes bounds bytes queued for writing per connection
	// before senders wait (one larger frame always fits); while it is
	// full, no new request of that connection is started. A connection
	// whose peer does not read thus holds at most about WriteQueueBytes
	// plus one answer per call in progress. Default 1 MiB.
	WriteQueueBytes int

	// Errors maps error codes to sentinels. Default: this package's codes.
	Errors *ErrorTable
	// Logger receives connection events. Default: discard.
	Logger hclog.Logger
}

// Validate checks the configuration and fills defaults.
func (c *ServerConfig) Validate() error {
	var errs []error
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.MaxFrameSize < minMaxFrameSize || c.MaxFrameSize > 1<<30 {
		errs = append(errs, fmt.Errorf("max frame size %d must be between %d and %d", c.MaxFrameSize, minMaxFrameSize, 1<<30))
	}
	if len(c.ClusterID) > maxClusterID || len(c.Name) > maxClusterID {
		errs = append(errs, fmt.Errorf("cluster id and name must be at most %d bytes", maxClusterID))
	}
	fill := func(name string, v *int, def, hi int) {
		if *v == 0 {
			*v = def
		}
		if *v < 0 || *v > hi {
			errs = append(errs, fmt.Errorf("%s %d must be between 1 and %d", name, *v, hi))
		}
	}
	fill("max concurrent calls", &c.MaxConcurrentCalls, DefaultMaxConcurrentCalls, 1<<20)
	fill("stream window", &c.StreamWindow, DefaultStreamWindow, maxWindow)
	fill("max connections", &c.MaxConns, DefaultMaxConns, 1<<24)
	fill("write queue bytes", &c.WriteQueueBytes, 1<<20, 1<<30)
	fillDur := func(name string, v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
		if *v < 0 {
			errs = append(errs, fmt.Errorf("%s %v must be positive", name, *v))
		}
	}
	fillDur("idle timeout", &c.IdleTimeout, DefaultIdleTimeout)
	fillDur("handshake timeout", &c.HandshakeTimeout, DefaultHandshakeTimeout)
	fillDur("frame timeout", &c.FrameTimeout, DefaultFrameTimeout)
	fillDur("write timeout", &c.WriteTimeout, DefaultWriteTimeout)
	if c.Errors == nil {
		c.Errors = defaultErrorTable()
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return errors.Join(errs...)
}

// handler kinds.
const (
	kindUnary = iota
	kindStream
)

type methodDesc struct {
	name   string
	kind   int
	inline bool
	newReq func() any
	// check, if set, vets a request body before it is decoded.
	check  func(body []byte) error
	unary  func(ctx context.Context, req any) (any, error)
	stream func(ctx context.Context, req any, s *ServerStream) error
}

// Server serves registered methods on any number of listeners.
// Register every method before the first Serve.
type Server struct {
	cfg    ServerConfig
	codecs *codecs
	logger hclog.Logger

	ctx    context.Context // cancelled by Close; parent of every handler context
	cancel context.CancelFunc

	mu        sync.Mutex // protects methods (until serving), serving, listeners, conns, closed
	methods   map[Method]*methodDesc
	serving   bool
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closed    bool

	wg      sync.WaitGroup // accept loops, connection goroutines and workers
	workers workers

	// refusedLog rate-limits log lines about connections refused for
	// MaxConns.
	refusedLog rateLog
}

// NewServer returns a server with no methods.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rpc server config: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, codecs: newCodecs(), logger: cfg.Logger, ctx: ctx, cancel: cancel,
		methods: map[Method]*methodDesc{}, listeners: map[net.Listener]struct{}{}, conns: map[*serverConn]struct{}{},
	}
	s.workers = workers{tasks: make(chan func()), done: ctx.Done(), wg: &s.wg}
	return s, nil
}

func (s *Server) register(m Method, d *methodDesc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case m == 0:
		return fmt.Errorf("method %q: number 0 is not a method", d.name)
	case s.serving:
		return fmt.Errorf("method %d (%s): register every method before Serve", m, d.name)
	case s.methods[m] != nil:
		return fmt.Errorf("method %d (%s) is already registered as %s", m, d.name, s.methods[m].name)
	}
	s.methods[m] = d
	return nil
}

// HandlerOption adjusts how a method is served.
type HandlerOption func(*methodDesc)

// Inline runs the handler on the connection's reader goroutine: requests
// on one connection are then handled one at a time in arrival order, with
// no goroutine per call. Only for handlers that never block (they hold up
// the connection); the context they get is the connection's, without the
// caller's deadline.
func Inline() HandlerOption { return func(d *methodDesc) { d.inline = true } }

// Handle registers a unary method. The handler gets a fresh *Req decoded
// from the request; a nil *Resp is sent as an empty response. An error is
// sent with its code (ErrorTable) and the connection stays.
func Handle[Req, Resp any](s *Server, m Method, name string, h func(ctx context.Context, req *Req) (*Resp, error), opts ...HandlerOption) error {
	d := &methodDesc{
		name: name, kind: kindUnary,
		newReq: func() any { return new(Req) },
		unary: func(ctx context.Context, req any) (any, error) {
			resp, err := h(ctx, req.(*Req))
			if err != nil || resp == nil {
				return nil, err
			}
			return resp, nil
		},
	}
	if bc, ok := any(new(Req)).(BodyChecker); ok {
		d.check = bc.CheckBody
	}
	for _, o := range opts {
		o(d)
	}
	return s.register(m, d)
}

// BodyChecker is implemented by request types that vet their encoded form
// before it is decoded, to bound what decoding allocates. Handle calls
// CheckBody (on a nil *Req) with the encoded request; an error is a
// protocol violation that closes the connection.
type BodyChecker interface {
	CheckBody(body []byte) error
}

// HandleStream registers a stream method. The handler gets the decoded
// request and the stream; returning nil ends the stream cleanly (the
// client's Recv returns io.EOF), an error ends it with that error.
func HandleStream[Req any](s *Server, m Method, name string, h func(ctx context.Context, req *Req, st *ServerStream) error) error {
	return s.register(m, &methodDesc{
		name: name, kind: kindStream,
		newReq: func() any { return new(Req) },
		stream: func(ctx context.Context, req any, st *ServerStream) error { return h(ctx, req.(*Req), st) },
	})
}

// Serve accepts connections on l until Close (returning ErrClosed) or an
// accept error. It takes ownership of l.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.Close()
		return ErrClosed
	}
	s.serving = true
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.logger.Info("rpc server listening", "addr", l.Addr().String(), "cluster", s.cfg.ClusterID, "tls", s.cfg.TLS != nil)
	var tempDelay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of descriptors and the like: back off, keep serving.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.logger.Warn("rpc accept failed; retrying", "addr", l.Addr().String(), "error", err, "delay", tempDelay)
				t := time.NewTimer(tempDelay)
				select {
				case <-t.C:
				case <-s.ctx.Done():
					t.Stop()
					return ErrClosed
				}
				continue
			}
			return fmt.Errorf("rpc accept on %s: %w", l.Addr(), err)
		}
		tempDelay = 0
		s.accept(nc)
	}
}

// accept admits a connection or refuses it when MaxConns are open.
func (s *Server) accept(nc net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	if len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		if n, ok := s.refusedLog.tick(); ok {
			s.logger.Warn("rpc connection refused: too many connections", "remote", nc.RemoteAddr().String(), "max_conns", s.cfg.MaxConns, "refused", n)
		}
		_ = nc.Close()
		return
	}
	sc := &serverConn{srv: s, active: map[uint64]*activeCall{}}
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.forget(sc)
		sc.serve(nc)
	}()
}

func (s *Server) forget(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
}

// ListenAndServe listens on addr (TCP) and serves until Close.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("rpc listen on %s: %w", addr, err)
	}
	return s.Serve(l)
}

// Close stops the listeners, tells every client the server is shutting
// down, cancels every handler and waits for all of the server's
// goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	for l := range s.listeners {
		_ = l.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	// Tell every client first, so that calls cut short fail with
	// ErrShuttingDown rather than with the cancellation that follows.
	var wg sync.WaitGroup
	for _, sc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc.shutdown(ErrShuttingDown)
		}()
	}
	wg.Wait()
	s.cancel()
	for _, sc := range conns {
		sc.cancelCalls()
	}
	s.wg.Wait()
	return nil
}

// Addrs returns the addresses the server listens on.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for l := range s.listeners {
		out = append(out, l.Addr())
	}
	return out
}
