package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/api"
)

// Leader routing. Every node accepts every call, and a follower forwards
// writes, linearizable reads and keepalives to the leader; that costs an
// extra round trip and the CPU of a second rpc server and client on the
// path of each call (measured: a follower forwarding a 64-way put load
// spent about as much CPU as the leader did). So the client learns which
// of its endpoints is the leader and sends leader-bound calls there
// directly; everything else (stale reads, watches, status) stays on the
// current endpoint, spreading that load.
//
// The hint is only an optimisation: a call sent to a node that is no
// longer the leader is forwarded as before, and a failed call drops the
// hint and goes to the rotation, so correctness never depends on it.
const (
	// routeCheckEvery is how often the hinted endpoint is asked whether
	// it still leads (one status call): a hint that went stale without a
	// failure (leadership moved, the old leader lives) costs forwarding
	// until then.
	routeCheckEvery = 3 * time.Second
	// routeRetryAfter spaces full lookups after one failed or found no
	// leader, so a cluster without one is not polled in a loop.
	routeRetryAfter = 500 * time.Millisecond
	// routeLookupTimeout bounds a lookup: a node that does not answer a
	// status call this fast is no endpoint to prefer.
	routeLookupTimeout = 2 * time.Second
	// routedAttemptTimeout bounds an attempt sent to the hinted leader
	// (unless RequestTimeout is shorter or the call blocks by design). A
	// leader cut off from its peers but not from clients keeps accepting
	// calls it cannot commit until CheckQuorum deposes it, and a paused
	// one never answers; either way the call should move on to the
	// rotation, whose nodes know the new leader, well before an ordinary
	// RequestTimeout. Retrying is safe: a write keeps its (ClientID, Seq).
	// About one election timeout and a failover at default timing, and
	// far above a healthy cluster's slowest writes.
	routedAttemptTimeout = 2 * time.Second
)

type router struct {
	c *Client

	leader atomic.Pointer[endpoint] // nil: unknown, calls take the rotation
	// quietUntil (Unix ns): until then a call with a hint needs no lookup,
	// so the hot path takes no lock.
	quietUntil atomic.Int64
	// nextLookup (Unix ns): without a hint, no lookup starts before then
	// (routeRetryAfter), so calls without a hint take no lock either.
	nextLookup atomic.Int64

	mu      sync.Mutex // protects the fields below
	running bool       // a lookup is under way
	last    time.Time  // when the last lookup started
	checked time.Time  // when the hint was last confirmed
}

func newRouter(c *Client) *router { return &router{c: c} }

// pick returns the endpoint for a call, and whether it came from the
// leader hint.
func (r *router) pick(s spec) (ep *endpoint, idx uint32, routed bool) {
	ep, idx = r.c.current()
	if !s.leader || r.c.cfg.NoLeaderRouting || len(r.c.endpoints) == 1 {
		return ep, idx, false
	}
	if l := r.leader.Load(); l != nil {
		if time.Now().UnixNano() >= r.quietUntil.Load() {
			r.maybeLookup(false)
		}
		return l, idx, true
	}
	if time.Now().UnixNano() >= r.nextLookup.Load() {
		r.maybeLookup(false)
	}
	return ep, idx, false
}

// failed drops the hint after a call routed to ep failed (it may be down,
// or no longer lead), and starts a new lookup.
func (r *router) failed(ep *endpoint) {
	r.quietUntil.Store(0)
	r.nextLookup.Store(0)
	if r.leader.CompareAndSwap(ep, nil) {
		r.c.logger.Debug("leader endpoint failed; calls take the rotation until the leader is found again", "endpoint", ep.addr)
	}
	r.maybeLookup(true)
}

// maybeLookup starts a lookup on a goroutine unless one runs or one ran
// too recently. With a hint and no failure, only the hint's age matters.
func (r *router) maybeLookup(afterFailure bool) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running || now.Sub(r.last) < routeRetryAfter {
		return
	}
	if !afterFailure && r.leader.Load() != nil && now.Sub(r.checked) < routeCheckEvery {
		return
	}
	r.running, r.last = true, now
	r.nextLookup.Store(now.Add(routeRetryAfter).UnixNano())
	if !r.c.goroutine(r.lookup) {
		r.running = false
	}
}

// lookup asks the hinted endpoint whether it still leads; without a hint,
// or if it does not, it asks every endpoint which node it is and whom it
// follows, and maps the leader of the highest term to its endpoint. Two
// endpoints answering as the same node (a proxy, a load balancer) make
// the mapping ambiguous: then there is no hint.
func (r *router) lookup() {
	defer func() {
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(r.c.ctx, min(r.c.cfg.RequestTimeout, routeLookupTimeout))
	defer cancel()
	if l := r.leader.Load(); l != nil {
		st, err := do[api.ClusterStatusResponse](r.c, ctx, spec{method: api.MethodClusterStatus, ep: l}, &api.ClusterStatusRequest{})
		if err == nil && st.Leader != 0 && st.Leader == st.Node.ID {
			r.confirmed()
			return
		}
	}
	var (
		wg   sync.WaitGroup
		resp = make([]*api.ClusterStatusResponse, len(r.c.endpoints))
	)
	for i, ep := range r.c.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := do[api.ClusterStatusResponse](r.c, ctx, spec{method: api.MethodClusterStatus, ep: ep}, &api.ClusterStatusRequest{})
			if err == nil {
				resp[i] = st
			}
		}()
	}
	wg.Wait()
	l := leaderEndpoint(r.c.endpoints, resp)
	r.leader.Store(l)
	if l != nil {
		r.confirmed()
		r.c.logger.Debug("leader endpoint found", "endpoint", l.addr)
	}
}

func (r *router) confirmed() {
	r.mu.Lock()
	r.checked = time.Now()
	r.quietUntil.Store(r.checked.Add(routeCheckEvery).UnixNano())
	r.mu.Unlock()
}

// leaderEndpoint picks, from the endpoints' status answers (nil: no
// answer), the endpoint of the leader known in the highest term, or nil
// if there is none or the endpoints do not map one to one onto nodes.
func leaderEndpoint(eps []*endpoint, resp []*api.ClusterStatusResponse) *endpoint {
	byNode := map[uint64]*endpoint{}
	var lead, term uint64
	for i, st := range resp {
		if st == nil {
			continue
		}
		if _, dup := byNode[st.Node.ID]; dup || st.Node.ID == 0 {
			return nil
		}
		byNode[st.Node.ID] = eps[i]
		if st.Leader != 0 && st.Term >= term {
			lead, term = st.Leader, st.Term
		}
	}
	if lead == 0 {
		return nil
	}
	return byNode[lead]
}
