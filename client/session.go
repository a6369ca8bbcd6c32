package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// SessionOption configures NewSession.
type SessionOption func(*sessionOptions)

type sessionOptions struct {
	ttl       time.Duration
	lockDelay time.Duration
	name      string
	resume    session.ID
}

// WithTTL sets the session's TTL: the server ends the session when no
// keepalive reached it for this long. 0 (the default) takes the cluster's
// default; the cluster refuses a TTL outside its range.
func WithTTL(d time.Duration) SessionOption { return func(o *sessionOptions) { o.ttl = d } }

// WithLockDelay sets how long the session's locks stay unavailable after
// the session expires (not after a clean release or Close), so a holder
// that lost its session but has not noticed yet is not overtaken at once.
// Without this option the cluster's default applies; 0 means none.
func WithLockDelay(d time.Duration) SessionOption {
	return func(o *sessionOptions) { o.lockDelay = d }
}

// WithName labels the session for people (lockctl sessions, logs).
func WithName(name string) SessionOption { return func(o *sessionOptions) { o.name = name } }

// WithSessionID resumes an existing session instead of creating one (a CLI
// that acts on a session made by another process): NewSession sends a
// keepalive, fails with api.ErrSessionNotFound if the session is gone, and
// keeps it alive from then on. WithTTL, WithLockDelay and WithName are
// ignored: the session keeps its own. Use Orphan, not Close, to stop
// keeping it alive without ending it.
func WithSessionID(id session.ID) SessionOption { return func(o *sessionOptions) { o.resume = id } }

// Session is a server-side session kept alive by this client. Locks,
// elections and ephemeral keys belong to a session and end with it.
//
// Liveness: the Client renews all of its sessions together (keeper.go):
// each is renewed every TTL/3, and when one is due, every session of the
// client due within the smallest TTL/6 goes in the same batch call, so a
// client with many sessions sends about one call per TTL/3. A failed call
// is retried within about 200 ms, each time on the next endpoint. The session is lost when the server says it does not know it
// (api.ErrSessionNotFound, from a keepalive or any call naming the
// session), or when a whole TTL passed since the last keepalive that
// succeeded was sent (the server may have expired it by then; the client
// counts from the send, so it gives up no later than the server does).
// Done is then closed and Err says why. A lost session is never revived:
// make a new one, and acquire again.
type Session struct {
	c         *Client
	id        session.ID
	lockDelay time.Duration
	name      string
	ttl       atomic.Int64 // nanoseconds; updated by keepalive answers

	// deadline is when the session is lost without a keepalive that
	// succeeds, as nanoseconds after born (monotonic clock): the last
	// successful keepalive's send time plus the TTL.
	born     time.Time
	deadline atomic.Int64

	// ctx is cancelled, with Err as its cause, when the session ends.
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu   sync.Mutex // protects err and held
	err  error
	held map[chan struct{}]struct{} // Lost channels of grants held through the session
}

// NewSession creates a session (or resumes one: WithSessionID) and starts
// keeping it alive. ctx bounds the creation only.
func (c *Client) NewSession(ctx context.Context, opts ...SessionOption) (*Session, error) {
	o := sessionOptions{lockDelay: -1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.ttl < 0 {
		return nil, api.Errorf(api.CodeInvalid, "session TTL %v must not be negative", o.ttl)
	}
	if o.lockDelay < -1 {
		return nil, api.Errorf(api.CodeInvalid, "session lock-delay %v must not be negative", o.lockDelay)
	}
	if n := len(o.name); n > c.cfg.Limits.MaxLabelBytes {
		return nil, api.Errorf(api.CodeTooLarge, "session name of %d bytes exceeds the %d-byte limit", n, c.cfg.Limits.MaxLabelBytes)
	}
	if o.resume != 0 {
		return c.resumeSession(ctx, o.resume)
	}
	req := &api.SessionCreateRequest{TTL: int64(o.ttl), LockDelay: int64(o.lockDelay), Name: o.name}
	sent := time.Now()
	resp, err := do[api.SessionCreateResponse](c, ctx, spec{method: api.MethodSessionCreate, write: &req.Write, primary: true}, req)
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	info := resp.Session
	if info.ID == 0 || info.TTL <= 0 {
		return nil, fmt.Errorf("creating session: the server answered session %s with TTL %v", info.ID, time.Duration(info.TTL))
	}
	return c.startSession(info, sent)
}

// resumeSession takes over keeping session id alive.
func (c *Client) resumeSession(ctx context.Context, id session.ID) (*Session, error) {
	req := &api.SessionKeepaliveRequest{ID: id}
	sent := time.Now()
	ka, err := do[api.SessionKeepaliveResponse](c, ctx, spec{method: api.MethodSessionKeepalive, leader: true}, req)
	if err != nil {
		return nil, fmt.Errorf("resuming session %s: %w", id, err)
	}
	info := api.SessionInfo{ID: id, TTL: ka.TTL}
	if r, err := c.SessionInfo(ctx, id); err == nil {
		info = r.Session
		info.TTL = ka.TTL
	} else if errors.Is(err, api.ErrSessionNotFound) {
		return nil, fmt.Errorf("resuming session %s: %w", id, err)
	}
	if info.TTL <= 0 {
		return nil, fmt.Errorf("resuming session %s: the server answered TTL %v", id, time.Duration(info.TTL))
	}
	return c.startSession(info, sent)
}

// startSession hands a session whose last successful keepalive (or
// creation) was sent at lastOK to the client's keeper.
func (c *Client) startSession(info api.SessionInfo, lastOK time.Time) (*Session, error) {
	s := &Session{c: c, id: info.ID, lockDelay: time.Duration(info.LockDelay), name: info.Name,
		held: map[chan struct{}]struct{}{}}
	s.ttl.Store(info.TTL)
	s.born = time.Now()
	s.setDeadline(lastOK.Add(s.TTL()))
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	if err := c.keeper.add(s, lastOK); err != nil {
		s.end(err)
		return nil, err
	}
	c.logger.Debug("session started", "session", s.id, "ttl", s.TTL())
	return s, nil
}

// ID returns the session's id.
func (s *Session) ID() session.ID { return s.id }

// TTL returns the session's TTL as the server last reported it.
func (s *Session) TTL() time.Duration { return time.Duration(s.ttl.Load()) }

// LockDelay returns the session's lock-delay (unknown, 0, for a resumed
// session whose details could not be read).
func (s *Session) LockDelay() time.Duration { return s.lockDelay }

// Name returns the session's label.
func (s *Session) Name() string { return s.name }

// Client returns the client the session belongs to.
func (s *Session) Client() *Client { return s.c }

// Done is closed when the session ends: lost (see Session) or closed. It
// is the lost-lock signal for every lock, semaphore and election held
// through the session (each also has its own Lost channel).
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err is nil while the session lives; then why it ended: an error wrapping
// ErrSessionLost and its cause (api.ErrSessionNotFound with the server's
// message, ErrSessionExpired, or ErrClosed), or ErrSessionClosed.
func (s *Session) Err() error {
	s.alive()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session: its keepalives stop, and the server destroys it,
// releasing its locks at once (without lock-delay) and deleting its
// ephemeral keys. A session already lost or closed is left alone (nil).
func (s *Session) Close(ctx context.Context) error {
	if !s.end(fmt.Errorf("session %s: %w", s.id, ErrSessionClosed)) {
		return nil
	}
	req := &api.SessionDestroyRequest{ID: s.id}
	_, err := do[api.SessionDestroyResponse](s.c, ctx, spec{method: api.MethodSessionDestroy, write: &req.Write}, req)
	if err != nil && !errors.Is(err, api.ErrSessionNotFound) {
		return fmt.Errorf("destroying session %s: %w", s.id, err)
	}
	return nil
}

// Orphan stops keeping the session alive without ending it: the server
// expires it after its TTL (its locks then sit out the lock-delay). Done
// closes with ErrSessionClosed.
func (s *Session) Orphan() {
	s.end(fmt.Errorf("session %s: %w (orphaned)", s.id, ErrSessionClosed))
}

// end records why the session ended, stops its keepalives (none is sent
// after end returns), signals every held lock and closes Done. Only the
// first call counts; it reports whether it was that one.
func (s *Session) end(err error) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	s.err = err
	held := s.held
	s.held = nil
	s.mu.Unlock()
	s.c.keeper.remove(s)
	// Done first: whoever wakes on a Lost channel finds the session over.
	s.cancel(err)
	for ch := range held {
		close(ch)
	}
	if errors.Is(err, ErrSessionLost) {
		s.c.logger.Warn("session lost", "session", s.id, "locks", len(held), "error", err)
	}
	return true
}

func (s *Session) setDeadline(t time.Time) { s.deadline.Store(int64(t.Sub(s.born))) }

// alive reports whether the session may still be live, ending it as
// expired if its deadline has passed. The keeper would find that out
// when it next runs; checking here too closes the window in which a
// process resumed after a pause longer than the TTL (SIGSTOP, a VM
// freeze, a long GC) would still see its locks as held because the
// keeper's goroutine has not been scheduled yet.
func (s *Session) alive() bool {
	if s.ctx.Err() != nil {
		return false
	}
	if over := time.Since(s.born) - time.Duration(s.deadline.Load()); over >= 0 {
		s.lose(fmt.Errorf("%w: no keepalive succeeded within the TTL %v (the process may have been paused); %v past the deadline",
			ErrSessionExpired, s.TTL(), over.Round(time.Millisecond)))
		return false
	}
	return true
}

// lose ends the session as lost because of cause.
func (s *Session) lose(cause error) {
	s.end(fmt.Errorf("session %s: %w: %w", s.id, ErrSessionLost, cause))
}

// noteErr ends the session if a call naming it was told it does not exist.
func (s *Session) noteErr(err error) {
	if err != nil && errors.Is(err, api.ErrSessionNotFound) {
		s.lose(err)
	}
}

// hold registers a grant held through the session and returns its Lost
// channel, closed when the session ends; false if it already ended.
func (s *Session) hold() (chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, false
	}
	ch := make(chan struct{})
	s.held[ch] = struct{}{}
	return ch, true
}

// unhold closes and forgets a Lost channel (the grant was released).
func (s *Session) unhold(ch chan struct{}) {
	s.mu.Lock()
	_, ok := s.held[ch]
	delete(s.held, ch)
	s.mu.Unlock()
	if ok {
		close(ch)
	}
}

// opContext returns ctx, also cancelled when the session ends, with the
// session's error as the cause.
func (s *Session) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	octx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.ctx, func() { cancel(s.Err()) })
	return octx, func() {
		stop()
		cancel(context.Canceled)
	}
}

// Keepalive timing: a failed keepalive is retried after
// keepaliveRetryMin, doubling up to keepaliveRetryMax (with jitter).
const (
	keepaliveRetryMin = 50 * time.Millisecond
	keepaliveRetryMax = 200 * time.Millisecond
)
