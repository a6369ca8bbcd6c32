package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand"
	mrand2 "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/rpc"
)

// Client talks to a lockd cluster. It is safe for concurrent use; make one
// per process and share it.
type Client struct {
	cfg    Config
	id     uint64 // this client's exactly-once id (the primary lane's)
	logger hclog.Logger

	endpoints []*endpoint
	cur       atomic.Uint32 // index of the endpoint calls go to
	route     *router       // the leader's endpoint, for leader-bound calls

	lanes  *lanePool
	keeper *keeper // renews every session's keepalive together

	randMu sync.Mutex // protects rand
	rand   *mrand2.Rand

	// ctx is cancelled (cause ErrClosed) by Close; every call, keepalive
	// loop and watch derives from it.
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // keepalive loops and watch goroutines

	mu     sync.Mutex // protects closed and wg.Add
	closed bool
}

// endpoint is one node's address and its rpc client (which dials lazily
// and redials with its own backoff).
type endpoint struct {
	addr string
	rc   *rpc.Client
}

// New returns a Client for the cluster at cfg.Endpoints. It does not
// connect: connections are made by the first calls.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lockd client config: %w", err)
	}
	table, err := errorTable()
	if err != nil {
		return nil, fmt.Errorf("lockd client: error table: %w", err)
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		if seed, err = randomID(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Client{
		cfg: cfg, id: id, logger: cfg.Logger.With("client_id", fmt.Sprintf("%016x", id)),
		rand:   mrand2.New(mrand2.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ctx:    ctx,
		cancel: cancel,
	}
	c.lanes = newLanePool(id, cfg.MaxConcurrentWrites)
	c.keeper = newKeeper(c)
	c.route = newRouter(c)
	for i, addr := range cfg.Endpoints {
		rc, err := rpc.NewClient(addr, rpc.ClientConfig{
			ClusterID: cfg.ClusterID, Name: cfg.Name, TLS: cfg.TLS, PoolSize: cfg.ConnsPerEndpoint,
			DialTimeout: cfg.DialTimeout, Dial: cfg.Dial, Errors: table,
			Rand:   mrand.New(mrand.NewSource(int64(seed) + int64(i) + 1)),
			Logger: cfg.Logger.Named("rpc"),
		})
		if err != nil {
			c.closeEndpoints()
			cancel(ErrClosed)
			return nil, fmt.Errorf("lockd client: endpoint %q: %w", addr, err)
		}
		c.endpoints = append(c.endpoints, &endpoint{addr: addr, rc: rc})
	}
	return c, nil
}

// randomID returns a random non-zero uint64 from crypto/rand.
func randomID() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("lockd client: reading crypto/rand: %w", err)
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v, nil
		}
	}
}

// ID returns this client's exactly-once id: the server remembers the
// result of its last write per id, and sessions record it.
func (c *Client) ID() uint64 { return c.id }

// Endpoints returns the configured endpoints.
func (c *Client) Endpoints() []string { return append([]string(nil), c.cfg.Endpoints...) }

// Endpoint returns the endpoint calls currently go to.
func (c *Client) Endpoint() string { return c.endpoints[c.cur.Load()].addr }

// Close stops every session's keepalive (their Done channels close with
// ErrSessionLost wrapping ErrClosed; the server expires them after their
// TTL: Close sessions first to release their locks at once), ends every
// watch, fails calls in flight with ErrClosed and closes the connections.
// It waits for the client's goroutines.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel(ErrClosed)
	c.wg.Wait()
	c.closeEndpoints()
	return nil
}

func (c *Client) closeEndpoints() {
	for _, ep := range c.endpoints {
		_ = ep.rc.Close()
	}
}

// goroutine runs f on a goroutine joined by Close, unless the client is
// closed (then it reports false).
func (c *Client) goroutine(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// current returns the endpoint calls go to and its index.
func (c *Client) current() (*endpoint, uint32) {
	i := c.cur.Load()
	return c.endpoints[i], i
}

// rotate moves calls off endpoint i after it failed with err. Concurrent
// failures of the same endpoint move it once.
func (c *Client) rotate(i uint32, err error) {
	if len(c.endpoints) == 1 {
		return
	}
	next := (i + 1) % uint32(len(c.endpoints))
	if c.cur.CompareAndSwap(i, next) {
		c.logger.Info("endpoint failed; switching", "from", c.endpoints[i].addr, "to", c.endpoints[next].addr, "error", err)
	}
}

// backoff returns the wait before retry round n (n ≥ 1): BackoffMin
// doubling up to BackoffMax, drawn uniformly from its upper half.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 1; i < n && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	return c.jitter(min(d, c.cfg.BackoffMax))
}

// jitter draws a wait uniformly from [d/2, d] with the client's seeded
// source.
func (c *Client) jitter(d time.Duration) time.Duration {
	half := int64(d / 2)
	if half <= 0 {
		return d
	}
	c.randMu.Lock()
	defer c.randMu.Unlock()
	return time.Duration(half + c.rand.Int64N(half+1))
}

// sleep waits d or until ctx ends (then it returns false).
func sleep(ctx context.Context, d time.Duration) bool {
	return sleepUnless(ctx, nil, d)
}

// sleep is the package's sleep that also ends (false) when the client
// closes.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	return sleepUnless(ctx, c.ctx.Done(), d)
}

// sleepUnless waits d; it returns false early if ctx ends or stop closes
// (a nil stop never does).
func sleepUnless(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return ctx.Err() == nil
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// callContext returns ctx, also cancelled (cause ErrClosed) when the
// client closes.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	return cctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

// errClosedNow reports ErrClosed if the client was closed.
func (c *Client) errClosedNow() error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}
