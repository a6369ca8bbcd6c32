package client

import (
	"context"
	"sync"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// Locks lists the locks whose names start with prefix ("" for all): each
// with its holders (by token), its waiters in queue order and the end of
// a lock-delay. Options: WithStale.
func (c *Client) Locks(ctx context.Context, prefix string, opts ...OpOption) (*api.LockListResponse, error) {
	o, err := gatherOptions("Locks", opts, "WithStale")
	if err != nil {
		return nil, err
	}
	req := &api.LockListRequest{Read: o.readHeader(), Prefix: prefix}
	return do[api.LockListResponse](c, ctx, spec{method: api.MethodLockList, leader: !o.stale}, req)
}

// CheckToken asks whether token is a grant that lock name still has: what
// a resource guarded by a lock asks before acting on a holder's request
// (Current false: the holder lost the lock; refuse). Tokens of one lock
// strictly increase, so a resource may also just refuse any token lower
// than the highest it has seen. Options: WithStale (not for fencing).
func (c *Client) CheckToken(ctx context.Context, name string, token uint64, opts ...OpOption) (*api.LockCheckResponse, error) {
	o, err := gatherOptions("CheckToken", opts, "WithStale")
	if err != nil {
		return nil, err
	}
	if err := c.cfg.Limits.CheckKey("lock name", name); err != nil {
		return nil, err
	}
	req := &api.LockCheckRequest{Read: o.readHeader(), Name: name, Token: token}
	return do[api.LockCheckResponse](c, ctx, spec{method: api.MethodLockCheck, leader: !o.stale}, req)
}

// Sessions lists the cluster's sessions. Options: WithStale.
func (c *Client) Sessions(ctx context.Context, opts ...OpOption) (*api.SessionListResponse, error) {
	o, err := gatherOptions("Sessions", opts, "WithStale")
	if err != nil {
		return nil, err
	}
	req := &api.SessionListRequest{Read: o.readHeader()}
	return do[api.SessionListResponse](c, ctx, spec{method: api.MethodSessionList, leader: !o.stale}, req)
}

// SessionInfo describes one session (api.ErrSessionNotFound if it does not
// exist). Options: WithStale.
func (c *Client) SessionInfo(ctx context.Context, id session.ID, opts ...OpOption) (*api.SessionInfoResponse, error) {
	o, err := gatherOptions("SessionInfo", opts, "WithStale")
	if err != nil {
		return nil, err
	}
	req := &api.SessionInfoRequest{Read: o.readHeader(), ID: id}
	return do[api.SessionInfoResponse](c, ctx, spec{method: api.MethodSessionInfo, leader: !o.stale}, req)
}

// Status returns the cluster's status as one node (the current endpoint,
// or the next ones if it fails) sees it: that node, the leader it knows,
// the term, and every member.
func (c *Client) Status(ctx context.Context) (*api.ClusterStatusResponse, error) {
	return do[api.ClusterStatusResponse](c, ctx, spec{method: api.MethodClusterStatus}, &api.ClusterStatusRequest{})
}

// EndpointStatus is one endpoint's answer to StatusAll.
type EndpointStatus struct {
	Endpoint string
	Status   *api.ClusterStatusResponse // nil if Err
	Err      error
}

// StatusAll asks every endpoint for its status at once (one attempt each,
// no failover), in the order of Config.Endpoints: what `lockctl status`
// shows, including the nodes that do not answer.
func (c *Client) StatusAll(ctx context.Context) []EndpointStatus {
	out := make([]EndpointStatus, len(c.endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := do[api.ClusterStatusResponse](c, ctx, spec{method: api.MethodClusterStatus, ep: ep}, &api.ClusterStatusRequest{})
			out[i] = EndpointStatus{Endpoint: ep.addr, Status: st, Err: err}
		}()
	}
	wg.Wait()
	return out
}
