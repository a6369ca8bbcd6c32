package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// TestKeepaliveNotFoundOnALeaderCutOffIsNotAnswered: a leader cut off
// from the majority does not know the sessions created through the next
// leader. Telling a client that such a session is not alive would make it
// give up a live session and its locks, so a "not alive" answer, single
// or in a batch, waits for the same leadership confirmation as a renewal
// (and fails without a majority) instead of being sent at once.
func TestKeepaliveNotFoundOnALeaderCutOffIsNotAnswered(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	a := c.newSession(lead, 3*time.Second, 0)
	// Created elsewhere, as far as this leader will ever know.
	unknown := session.ID(1 << 40)
	resp, err := keepaliveBatch(t, c.clients[lead], unknown)
	if err != nil || len(resp.Results) != 1 {
		t.Fatalf("batch keepalive with a majority: %+v, %v", resp, err)
	}
	for id := range c.servers {
		if id != lead {
			c.stop(id)
		}
	}
	for _, ids := range [][]session.ID{{unknown}, {a, unknown}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var resp api.SessionKeepaliveBatchResponse
		err := c.clients[lead].Call(ctx, rpc.Method(api.MethodSessionKeepaliveBatch), &api.SessionKeepaliveBatchRequest{IDs: ids}, &resp)
		cancel()
		if err == nil {
			t.Fatalf("a leader without a majority answered a batch keepalive of %v: %+v", ids, resp.Results)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var one api.SessionKeepaliveResponse
	err = c.clients[lead].Call(ctx, rpc.Method(api.MethodSessionKeepalive), &api.SessionKeepaliveRequest{ID: unknown}, &one)
	if err == nil || errors.Is(err, api.ErrSessionNotFound) {
		t.Fatalf("a leader without a majority answered a keepalive of an unknown session: %+v, %v", one, err)
	}
}
