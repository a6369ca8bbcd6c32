package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// This file holds the calls an operator's tool needs (lockctl) that act
// on sessions and elections this client does not own.

// DestroySession ends the session id at once, whoever keeps it alive: the
// server releases its locks (without lock-delay) and deletes its
// ephemeral keys, and its owner learns of it at its next keepalive
// (Session.Done closes with api.ErrSessionNotFound). It fails with
// api.ErrSessionNotFound if the session does not exist.
func (c *Client) DestroySession(ctx context.Context, id session.ID) error {
	if id == 0 {
		return api.Errorf(api.CodeInvalid, "session id 0 names no session")
	}
	req := &api.SessionDestroyRequest{ID: id}
	if _, err := do[api.SessionDestroyResponse](c, ctx, spec{method: api.MethodSessionDestroy, write: &req.Write}, req); err != nil {
		return fmt.Errorf("destroying session %s: %w", id, err)
	}
	return nil
}

// ObserveElection is Election.Observe for an election this client takes
// no part in: it needs no session. It reports the leader now and every
// change after it, until ctx ends or the client closes.
func (c *Client) ObserveElection(ctx context.Context, name string) <-chan LeaderInfo {
	// Observe reads and watches the leader key through the handle's
	// client only; the session is never used, so an empty one (which no
	// one can reach from outside) stands in for it.
	e := &Election{h: newHandle(&Session{c: c}, electionKey(name), api.Exclusive, 0), key: electionKey(name)}
	return e.Observe(ctx)
}

// LeaderContact is one endpoint's answer to LeaderContactAll.
type LeaderContact struct {
	Endpoint string
	// Age is the time since the endpoint's node last heard from a leader
	// (0 on the leader itself); Index the Raft index it has applied.
	Age   time.Duration
	Index uint64
	Node  string
	Err   error
}

// leaderContactProbe is the lock name the probe reads. Any name works (a
// check of a lock that does not exist is answered, and is small); this
// one is unlikely to be in use, so the answer stays small.
const leaderContactProbe = "lockd/leader-contact-probe"

// LeaderContactAll asks every endpoint at once (one attempt each, no
// failover) how long ago its node last heard from a leader, with a stale
// read served by that node alone: what `lockctl status` shows as "last
// contact". Answers are in the order of Config.Endpoints.
func (c *Client) LeaderContactAll(ctx context.Context) []LeaderContact {
	out := make([]LeaderContact, len(c.endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &api.LockCheckRequest{Read: api.ReadHeader{Stale: true}, Name: leaderContactProbe}
			resp, err := do[api.LockCheckResponse](c, ctx, spec{method: api.MethodLockCheck, ep: ep}, req)
			out[i] = LeaderContact{Endpoint: ep.addr, Err: err}
			if err == nil {
				out[i].Age, out[i].Index, out[i].Node = time.Duration(resp.Read.LeaderContactAge), resp.Read.Index, resp.Read.Node
			}
		}()
	}
	wg.Wait()
	return out
}
