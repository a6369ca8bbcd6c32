package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
)

// spec says how one logical call is made.
type spec struct {
	method uint16
	// write, for a mutating call, points at the request's header: the
	// call takes a lane and fills it.
	write *api.WriteHeader
	// primary runs the write on the lane whose id is the client's own
	// (session create: the server counts sessions per client id).
	primary bool
	// freshSeq gives every attempt a new sequence number on the call's
	// lane (lock acquire: see lock.go for why that is safe there).
	freshSeq bool
	// blocking calls (a waiting acquire) get no per-attempt timeout.
	blocking bool
	// timeout overrides RequestTimeout for each attempt.
	timeout time.Duration
	// once makes a single attempt (a failed one still moves calls to the
	// next endpoint): the caller has its own retry schedule.
	once bool
	// ep pins the call to one endpoint: one attempt, no rotation.
	ep *endpoint
	// leader marks a call the leader serves (writes always are): it goes
	// to the leader's endpoint when the client knows it (route.go).
	leader bool
}

// do runs one logical call: attempts on the current endpoint, and on a
// retryable failure (see retryable) on the next one, with backoff after
// each full round, until it succeeds, fails for good, or ctx ends. A write
// keeps its lane, hence its (ClientID, Seq), across attempts, so a retry
// of a write that did run returns the remembered result.
func do[Resp any](c *Client, ctx context.Context, s spec, req any) (_ *Resp, err error) {
	if err := c.errClosedNow(); err != nil {
		return nil, err
	}
	// No context of its own for the call: Close ends it through its waits
	// (a lane, a backoff), which watch c.ctx too, and through the rpc
	// clients, which it closes. A context per call registered with the
	// client's was a sixth of the client's CPU under load.
	var ln *lane
	if s.write != nil {
		if ln, err = c.lanes.get(ctx, c.ctx.Done(), s.primary); err != nil {
			if c.ctx.Err() != nil {
				return nil, gaveUp(c.ctx, err)
			}
			return nil, gaveUp(ctx, err)
		}
		defer func() {
			// Abandoned without an answer, the write may still be in
			// flight (or, for an acquire, queued): retire its lane, so
			// that a newer Seq on a lane always means this same call was
			// sent again.
			c.lanes.put(ln, s.primary, err != nil && (ctx.Err() != nil || retryable(err)))
		}()
		ln.seq++
		*s.write = api.WriteHeader{ClientID: ln.id, Seq: ln.seq}
		s.leader = true
	}
	n := len(c.endpoints)
	for attempt := 1; ; attempt++ {
		var (
			ep     = s.ep
			idx    uint32
			routed bool
		)
		if ep == nil {
			ep, idx, routed = c.route.pick(s)
		}
		resp := new(Resp)
		as := s
		if routed && as.timeout == 0 {
			as.timeout = min(c.cfg.RequestTimeout, routedAttemptTimeout)
		}
		err := c.attempt(ctx, ep, as, req, resp)
		if err == nil {
			return resp, nil
		}
		err = translate(err)
		if c.ctx.Err() != nil {
			// Close cancels ctx through an AfterFunc goroutine, which may
			// not have run yet when the closed connection fails the call.
			return nil, gaveUp(c.ctx, err)
		}
		if ctx.Err() != nil {
			return nil, gaveUp(ctx, err)
		}
		if s.ep != nil || !retryable(err) {
			return nil, err
		}
		if routed {
			c.route.failed(ep)
		}
		if ep == c.endpoints[idx] {
			c.rotate(idx, err)
		}
		if s.once {
			return nil, err
		}
		var wait time.Duration
		if attempt%n == 0 {
			wait = c.backoff(attempt / n)
		}
		c.logger.Debug("call failed; retrying", "method", s.method, "endpoint", ep.addr, "attempt", attempt, "wait", wait, "error", err)
		if !c.sleep(ctx, wait) {
			if c.ctx.Err() != nil {
				return nil, gaveUp(c.ctx, err)
			}
			return nil, gaveUp(ctx, err)
		}
		if ln != nil && s.freshSeq {
			ln.seq++
			s.write.Seq = ln.seq
		}
	}
}

// attempt makes one call on ep, bounded by the per-attempt timeout
// unless the call blocks by design.
func (c *Client) attempt(ctx context.Context, ep *endpoint, s spec, req, resp any) error {
	if s.blocking {
		return ep.rc.Call(ctx, rpc.Method(s.method), req, resp)
	}
	t := s.timeout
	if t == 0 {
		t = c.cfg.RequestTimeout
	}
	return ep.rc.CallTimeout(ctx, rpc.Method(s.method), req, resp, t)
}

// A lane is an exactly-once identity: a ClientID with its own sequence.
// The server remembers only the last (Seq, result) per ClientID and
// refuses an older Seq (api.ErrStaleSequence), so concurrent writes under
// one ClientID would refuse each other whenever they arrive out of order.
// Hence each write in flight holds a lane of its own, for all of its
// attempts: per ClientID there is at most one write in flight, its
// retries reuse its Seq, and the next write on that lane gets Seq+1.
type lane struct {
	id  uint64
	seq uint64 // last Seq used; touched only by the lane's holder
}

// lanePool hands out lanes. The primary lane carries the client's own id;
// the others are made on demand, each with a random id, and kept for
// reuse (the server forgets an idle id after a while, which is harmless:
// the next Seq is simply new to it).
type lanePool struct {
	primary chan *lane    // cap 1: holds the primary lane while it is free
	slots   chan struct{} // cap MaxConcurrentWrites: other lanes in use

	mu   sync.Mutex // protects free
	free []*lane

	waiting atomic.Int32 // writes waiting for a lane
}

func newLanePool(id uint64, maxWrites int) *lanePool {
	p := &lanePool{primary: make(chan *lane, 1), slots: make(chan struct{}, maxWrites)}
	p.primary <- &lane{id: id}
	return p
}

// get waits for a lane: the primary one, or any other, until ctx ends or
// closed closes.
func (p *lanePool) get(ctx context.Context, closed <-chan struct{}, primary bool) (*lane, error) {
	if primary {
		select {
		case l := <-p.primary:
			return l, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-closed:
			return nil, ErrClosed
		}
	}
	select {
	case p.slots <- struct{}{}:
	default:
		// All lanes are in use: wait, counted (for tests and debugging).
		p.waiting.Add(1)
		defer p.waiting.Add(-1)
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-closed:
			return nil, ErrClosed
		}
	}
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		l := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return l, nil
	}
	p.mu.Unlock()
	id, err := randomID()
	if err != nil {
		<-p.slots
		return nil, err
	}
	return &lane{id: id}, nil
}

// put returns a lane once its call has an answer or gave up. A lane whose
// call gave up without an answer is retired (never used again) when
// retire is set, except the primary one, which carries the client's
// identity: a request of that call may still arrive later, and the
// server then refuses it as stale if the lane's next write got there
// first, so it never applies out of order.
func (p *lanePool) put(l *lane, primary, retire bool) {
	if primary {
		p.primary <- l
		return
	}
	if !retire {
		p.mu.Lock()
		p.free = append(p.free, l)
		p.mu.Unlock()
	}
	<-p.slots
}
