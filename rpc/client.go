package rpc

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Client defaults.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultPoolSize    = 2
	DefaultBackoffMin  = 50 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
)

// ClientConfig configures a Client. Validate fills defaults.
type ClientConfig struct {
	// ClusterID must match the server's.
	ClusterID string
	// Name describes this client in the server's logs ("node 2").
	Name string
	// TLS, if set, is used for every connection: see ClientTLS.
	TLS *tls.Config

	// DialTimeout bounds connecting plus the handshake. Default 5 s.
	DialTimeout time.Duration
	// PoolSize is the number of connections calls are spread over. Default 2.
	PoolSize int
	// MaxFrameSize bounds a frame body this client accepts. Default 4 MiB.
	MaxFrameSize int
	// StreamWindow is how many messages a stream may have in flight
	// towards the client. Default 32.
	StreamWindow int
	// WriteTimeout closes a connection on which one write makes no progress
	// for this long. Default 30 s.
	WriteTimeout time.Duration
	// WriteQueueBytes bounds bytes queued for writing per connection
	// before callers wait. Default 1 MiB.
	WriteQueueBytes int

	// After a failed dial a connection slot waits before the next attempt:
	// BackoffMin doubling up to BackoffMax, each wait drawn uniformly from
	// its upper half. Calls meanwhile fail at once with ErrUnavailable.
	BackoffMin, BackoffMax time.Duration
	// Rand draws the jitter. Default: seeded from the clock; tests pass a
	// seeded one.
	Rand *rand.Rand

	// Dial opens the raw connection. Default: net.Dialer over TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Errors maps error codes to sentinels. Default: this package's codes.
	Errors *ErrorTable
	// Logger receives connection events. Default: discard.
	Logger hclog.Logger
}

// Validate checks the configuration and fills defaults.
func (c *ClientConfig) Validate() error {
	var errs []error
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.DialTimeout < 0 || c.WriteTimeout < 0 || c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("dial timeout %v, write timeout %v and backoff %v..%v must be positive and ordered",
			c.DialTimeout, c.WriteTimeout, c.BackoffMin, c.BackoffMax))
	}
	if c.PoolSize == 0 {
		c.PoolSize = DefaultPoolSize
	}
	if c.PoolSize < 0 || c.PoolSize > 64 {
		errs = append(errs, fmt.Errorf("pool size %d must be between 1 and 64", c.PoolSize))
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.MaxFrameSize < minMaxFrameSize || c.MaxFrameSize > 1<<30 {
		errs = append(errs, fmt.Errorf("max frame size %d must be between %d and %d", c.MaxFrameSize, minMaxFrameSize, 1<<30))
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	if c.StreamWindow < 0 || c.StreamWindow > maxWindow {
		errs = append(errs, fmt.Errorf("stream window %d must be between 1 and %d", c.StreamWindow, maxWindow))
	}
	if c.WriteQueueBytes == 0 {
		c.WriteQueueBytes = 1 << 20
	}
	if c.WriteQueueBytes < 0 {
		errs = append(errs, fmt.Errorf("write queue bytes %d must be positive", c.WriteQueueBytes))
	}
	if len(c.ClusterID) > maxClusterID || len(c.Name) > maxClusterID {
		errs = append(errs, fmt.Errorf("cluster id and name must be at most %d bytes", maxClusterID))
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	if c.Dial == nil {
		d := &net.Dialer{}
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if c.Errors == nil {
		c.Errors = defaultErrorTable()
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return errors.Join(errs...)
}

// Client calls methods on one server address over a small pool of
// connections, dialled on first use and again after they die, with
// backoff. It is safe for concurrent use.
type Client struct {
	addr   string
	cfg    ClientConfig
	codecs *codecs
	logger hclog.Logger

	mu     sync.Mutex // protects slots, next, closed and cfg.Rand
	slots  []*slot
	next   int
	closed bool
	wg     sync.WaitGroup // connection goroutines
}

// slot is one connection of the pool and its dial state.
type slot struct {
	cc       *clientConn   // nil, or the latest connection (maybe dead)
	dialing  chan struct{} // non-nil while a dial runs; closed when it ends
	failures int           // consecutive failed dials
	retryAt  time.Time     // no dial before this
	lastErr  error         // why the last dial failed
}

// NewClient returns a client for addr ("host:port"). It dials lazily.
func NewClient(addr string, cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rpc client config: %w", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("rpc client address %q: %w", addr, err)
	}
	c := &Client{addr: addr, cfg: cfg, codecs: newCodecs(), logger: cfg.Logger.With("server", addr)}
	for range cfg.PoolSize {
		c.slots = append(c.slots, &slot{})
	}
	return c, nil
}

// Addr returns the server address.
func (c *Client) Addr() string { return c.addr }

// DialError says why no connection to an address could be had.
type DialError struct {
	Addr    string
	Attempt int           // consecutive failures so far
	RetryIn time.Duration // until the next attempt is allowed
	Err     error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("rpc %s unavailable: %v (attempt %d failed; next attempt in %v)", e.Addr, e.Err, e.Attempt, e.RetryIn.Round(time.Millisecond))
}

// Unwrap returns ErrUnavailable and the cause.
func (e *DialError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// backoffLocked is the wait after failures consecutive failed dials.
func (c *Client) backoffLocked(failures int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 1; i < failures && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	if half := int64(d / 2); half > 0 {
		d = time.Duration(half + c.cfg.Rand.Int63n(half+1))
	}
	return d
}

// readyConn is conn's fast path: the next slot's connection if it is live,
// else nil (then a call would wait for or make a dial).
func (c *Client) readyConn() *clientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	s := c.slots[c.next%len(c.slots)]
	if s.cc == nil || !s.cc.usable() {
		return nil
	}
	c.next++
	return s.cc
}

// conn returns a live connection, dialling one if needed.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("rpc %s: client %w", c.addr, ErrClosed)
		}
		s := c.slots[c.next%len(c.slots)]
		c.next++
		if s.cc != nil && s.cc.usable() {
			cc := s.cc
			c.mu.Unlock()
			return cc, nil
		}
		if d := s.dialing; d != nil {
			c.mu.Unlock()
			select {
			case <-d:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("rpc %s: waiting for a connection: %w", c.addr, ctx.Err())
			}
		}
		if wait := time.Until(s.retryAt); wait > 0 {
			// This slot is backing off; any other live connection will do.
			for _, o := range c.slots {
				if o.cc != nil && o.cc.usable() {
					cc := o.cc
					c.mu.Unlock()
					return cc, nil
				}
			}
			err := &DialError{Addr: c.addr, Attempt: s.failures, RetryIn: wait, Err: s.lastErr}
			c.mu.Unlock()
			return nil, err
		}
		done := make(chan struct{})
		s.dialing = done
		c.mu.Unlock()

		cc, err := c.dial(ctx)

		c.mu.Lock()
		s.dialing = nil
		close(done)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				// Our caller gave up; that says nothing about the server.
				c.mu.Unlock()
				return nil, fmt.Errorf("rpc %s: dial: %w", c.addr, err)
			}
			s.failures++
			wait := c.backoffLocked(s.failures)
			s.retryAt = time.Now().Add(wait)
			s.lastErr = err
			c.mu.Unlock()
			c.logger.Warn("rpc dial failed", "error", err, "attempt", s.failures, "retry_in", wait)
			return nil, &DialError{Addr: c.addr, Attempt: s.failures, RetryIn: wait, Err: err}
		}
		if c.closed {
			c.mu.Unlock()
			cc.close(ErrClosed)
			return nil, fmt.Errorf("rpc %s: client %w", c.addr, ErrClosed)
		}
		s.failures, s.lastErr, s.cc = 0, nil, cc
		c.wg.Add(2)
		c.mu.Unlock()
		go func() {
			defer c.wg.Done()
			cc.readLoop()
		}()
		go func() {
			defer c.wg.Done()
			cc.w.run()
		}()
		return cc, nil
	}
}

// dial connects, runs TLS and the handshake.
func (c *Client) dial(ctx context.Context) (*clientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	nc, err := c.cfg.Dial(ctx, c.addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if c.cfg.TLS != nil {
		cfg := c.cfg.TLS
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(c.addr)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	cc := &clientConn{client: c, pending: map[uint64]*call{}}
	fr := newFrameReader(nc, c.cfg.MaxFrameSize)
	cc.init(nc, fr, c.codecs, c.cfg.Errors, c.logger, c.cfg.WriteQueueBytes, c.cfg.WriteTimeout)
	cc.addr = c.addr
	cc.localWindow = c.cfg.StreamWindow
	cc.peerMaxFrame = maxHelloSize
	hi := hello{
		Magic: protocolMagic, MinVersion: MinProtocolVersion, MaxVersion: MaxProtocolVersion,
		ClusterID: c.cfg.ClusterID, Name: c.cfg.Name, MaxFrame: uint32(c.cfg.MaxFrameSize), Window: uint32(c.cfg.StreamWindow),
	}
	if err := cc.send(ctx, Header{Type: FrameHello}, nil, hi); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("sending hello: %w", err)
	}
	ack, err := readHelloAck(fr, cc.dec, c.cfg.Errors, c.addr, c.cfg.ClusterID)
	if err != nil {
		_ = nc.Close()
		if ctx.Err() != nil && isTimeout(err) {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		var re *RemoteError
		if errors.As(err, &re) {
			c.logger.Error("rpc server refused the connection", "error", err)
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	cc.peerMaxFrame = int(ack.MaxFrame)
	cc.peerWindow = int(min(ack.Window, maxWindow))
	cc.slots = make(chan struct{}, ack.MaxConcurrent)
	cc.logger = c.logger.With("server_name", ack.Name)
	cc.logger.Debug("rpc connected", "version", ack.Version, "max_calls", ack.MaxConcurrent)
	return cc, nil
}

// Close closes every connection, failing calls in flight, and waits for
// the client's goroutines.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	var ccs []*clientConn
	for _, s := range c.slots {
		if s.cc != nil {
			ccs = append(ccs, s.cc)
		}
	}
	c.mu.Unlock()
	for _, cc := range ccs {
		cc.close(fmt.Errorf("client %w", ErrClosed))
	}
	c.wg.Wait()
	return nil
}

// Call sends req to method m and decodes the answer into resp (a pointer;
// nil to ignore the body). The context's deadline travels to the server;
// cancelling it abandons the call there too. Errors name the address;
// remote errors match their sentinels with errors.Is.
func (c *Client) Call(ctx context.Context, m Method, req, resp any) error {
	return c.call(ctx, m, req, resp, 0)
}

// CallTimeout is Call bounded by timeout as well as by ctx: it is Call
// with context.WithTimeout(ctx, timeout), without deriving a context
// (which registers with ctx, under ctx's lock, on every call: costly when
// many goroutines share one parent). The error of an expired call wraps
// context.DeadlineExceeded.
func (c *Client) CallTimeout(ctx context.Context, m Method, req, resp any, timeout time.Duration) error {
	if timeout <= 0 {
		return c.call(ctx, m, req, resp, 0)
	}
	if cc := c.readyConn(); cc != nil {
		err := cc.call(ctx, m, req, resp, timeout)
		if err == nil || !errors.Is(err, ErrIdle) || !errors.Is(err, ErrConnClosed) {
			return err
		}
		// Closed for idleness before the request was read: retry, as
		// call does, the usual way.
	}
	// Dialling waits on ctx: bound it the usual way.
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.call(tctx, m, req, resp, 0)
}

func (c *Client) call(ctx context.Context, m Method, req, resp any, timeout time.Duration) error {
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx)
		if err != nil {
			return err
		}
		err = cc.call(ctx, m, req, resp, timeout)
		// A connection the server closed for idleness processed no request
		// after it decided so: retrying once is safe.
		if err != nil && attempt == 0 && errors.Is(err, ErrIdle) && errors.Is(err, ErrConnClosed) {
			continue
		}
		return err
	}
}

// Notify sends req to method m without waiting for, or getting, an answer.
// It returns once the request is queued for writing.
func (c *Client) Notify(ctx context.Context, m Method, req any) error {
	cc, err := c.conn(ctx)
	if err != nil {
		return err
	}
	return cc.notify(ctx, m, req)
}

// NotifyEncoded is Notify for a body the caller encoded itself with a
// handle from NewHandle (with its own long-lived encoder, which keeps its
// grown buffer). body is copied into the connection's write queue: the
// caller may reuse it once NotifyEncoded returns.
func (c *Client) NotifyEncoded(ctx context.Context, m Method, body []byte) error {
	cc, err := c.conn(ctx)
	if err != nil {
		return err
	}
	var pbuf [binary.MaxVarintLen64]byte
	prefix := deadlinePrefix(ctx, pbuf[:])
	if n := len(prefix) + len(body); n > cc.peerMaxFrame {
		return cc.wrap(m, fmt.Errorf("%w: request of %d bytes exceeds the server's %d-byte limit", ErrFrameTooLarge, n, cc.peerMaxFrame))
	}
	return cc.wrap(m, cc.w.write(ctx, Header{Type: FrameRequest, Flags: FlagOneway, Method: m, ID: cc.nextID.Add(1)}, prefix, body))
}

// Stream opens a stream to method m with req as its request. The stream
// ends when the handler returns, when ctx ends, or on Close; call Close
// (or Recv until it fails) to release it.
func (c *Client) Stream(ctx context.Context, m Method, req any) (*ClientStream, error) {
	cc, err := c.conn(ctx)
	if err != nil {
		return nil, err
	}
	return cc.openStream(ctx, m, req)
}
