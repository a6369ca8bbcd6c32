package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// methodForwardKeepaliveBatch carries a batch keepalive from a follower to
// the leader as one call (the single-session methodForwardKeepalive is in
// write.go). A leader older than it answers rpc.ErrUnknownMethod, which
// reaches the client, and the client falls back to single keepalives.
const methodForwardKeepaliveBatch rpc.Method = 202

// keepaliveForward sends ids to the leader through c and returns one
// result per id, or an error concerning them all.
type keepaliveForward func(ctx context.Context, c *rpc.Client, ids []session.ID) ([]api.KeepaliveResult, error)

func (s *Server) onSessionKeepalive(ctx context.Context, req *api.SessionKeepaliveRequest) (*api.SessionKeepaliveResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	return s.keepalive(ctx, req.ID, forwardOne)
}

func (s *Server) onForwardKeepalive(ctx context.Context, req *api.SessionKeepaliveRequest) (*api.SessionKeepaliveResponse, error) {
	return s.keepalive(ctx, req.ID, nil)
}

func (s *Server) onSessionKeepaliveBatch(ctx context.Context, req *api.SessionKeepaliveBatchRequest) (*api.SessionKeepaliveBatchResponse, error) {
	if err := api.CheckKeepaliveBatch(len(req.IDs)); err != nil {
		return nil, err
	}
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := s.keepalives(ctx, req.IDs, forwardBatch)
	if err != nil {
		return nil, err
	}
	return &api.SessionKeepaliveBatchResponse{Results: res}, nil
}

func (s *Server) onForwardKeepaliveBatch(ctx context.Context, req *api.SessionKeepaliveBatchRequest) (*api.SessionKeepaliveBatchResponse, error) {
	if err := api.CheckKeepaliveBatch(len(req.IDs)); err != nil {
		return nil, err
	}
	res, err := s.keepalives(ctx, req.IDs, nil)
	if err != nil {
		return nil, err
	}
	return &api.SessionKeepaliveBatchResponse{Results: res}, nil
}

// keepalive is a batch of one, answered the way the single method always
// was: a session that is not alive is the call's error.
func (s *Server) keepalive(ctx context.Context, id session.ID, fwd keepaliveForward) (*api.SessionKeepaliveResponse, error) {
	res, err := s.keepalives(ctx, []session.ID{id}, fwd)
	if err != nil {
		return nil, err
	}
	if err := res[0].Err(); err != nil {
		return nil, err
	}
	return &api.SessionKeepaliveResponse{TTL: res[0].TTL}, nil
}

// keepalives renews sessions at the leader, whose memory holds the
// deadlines; a follower forwards them all in one call with fwd (nil: this
// call was itself forwarded, and forwarding again would let it bounce
// between nodes during an election). Right after an election it waits (up
// to LeaderWait) until the new leader has taken the sessions over. The
// answer has one result per id, in order; a failure that concerns every
// id (no leader in time, ctx) is the error.
func (s *Server) keepalives(ctx context.Context, ids []session.ID, fwd keepaliveForward) ([]api.KeepaliveResult, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if time.Now().After(deadline) {
				return nil, s.unavailable("keepalive")
			}
			if err := s.pause(ctx); err != nil {
				return nil, err
			}
		}
		lead, term := s.node.Leader()
		switch {
		case lead == s.cfg.ID:
			res, ok := s.renew(term, ids)
			if !ok {
				continue // not promoted yet (or demoted meanwhile)
			}
			if len(res) > 0 {
				// Answer only once a majority still follows this node: a
				// leader cut off from the others keeps its role until
				// CheckQuorum, and a keepalive it acknowledged meanwhile
				// would be unknown to the new leader, which could expire
				// the session before the client (told it is fine) sends
				// the next one. Found by the majority/minority nemesis.
				// A "not alive" answer needs the same confirmation: a
				// session created through the new leader is unknown to
				// the cut-off one, and its client, told so, would give up
				// a live session (and its locks).
				// One confirmation covers the whole batch.
				if rerr := s.confirmer.wait(ctx); rerr != nil {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					continue
				}
			}
			return res, nil
		case lead == consensus.None:
		case fwd == nil:
			return nil, s.unavailable("forwarded keepalive")
		default:
			c, err := s.peers.get(lead)
			if err != nil {
				continue
			}
			res, err := fwd(ctx, c, ids)
			if err == nil {
				return res, nil
			}
			if !retryable(err) {
				return nil, err
			}
		}
	}
}

// renew renews ids in the tracker under one hold of leaseMu, if this node
// holds the sessions of term (ok). It reports per id its TTL or that it
// is not alive.
func (s *Server) renew(term consensus.Term, ids []session.ID) (res []api.KeepaliveResult, ok bool) {
	res = make([]api.KeepaliveResult, len(ids))
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.promoted != term {
		return nil, false
	}
	now := s.cfg.Now()
	for i, id := range ids {
		ttl, err := s.tracker.Keepalive(now, id)
		switch {
		case err == nil:
			res[i].TTL = int64(ttl)
		case errors.Is(err, session.ErrUnknownSession), errors.Is(err, session.ErrExpired):
			res[i].Code = api.CodeSessionNotFound
			res[i].Message = fmt.Sprintf("session %s is not alive (%v); create a new session", id, err)
		default:
			// ErrNotLeader: the tracker was demoted under the same term;
			// the caller waits for the next leader.
			return nil, false
		}
	}
	return res, true
}

// forwardOne forwards a single keepalive with the method every leader
// version serves; a session that is not alive comes back as the error.
func forwardOne(ctx context.Context, c *rpc.Client, ids []session.ID) ([]api.KeepaliveResult, error) {
	var resp api.SessionKeepaliveResponse
	if err := c.Call(ctx, methodForwardKeepalive, &api.SessionKeepaliveRequest{ID: ids[0]}, &resp); err != nil {
		return nil, err
	}
	return []api.KeepaliveResult{{TTL: resp.TTL}}, nil
}

// forwardBatch forwards a whole batch in one call.
func forwardBatch(ctx context.Context, c *rpc.Client, ids []session.ID) ([]api.KeepaliveResult, error) {
	var resp api.SessionKeepaliveBatchResponse
	if err := c.Call(ctx, methodForwardKeepaliveBatch, &api.SessionKeepaliveBatchRequest{IDs: ids}, &resp); err != nil {
		return nil, err
	}
	if len(resp.Results) != len(ids) {
		return nil, fmt.Errorf("the leader answered a batch keepalive of %d sessions with %d results; the nodes may run incompatible versions", len(ids), len(resp.Results))
	}
	return resp.Results, nil
}
