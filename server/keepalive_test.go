package server

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

func keepaliveBatch(t *testing.T, cl *rpc.Client, ids ...session.ID) (*api.SessionKeepaliveBatchResponse, error) {
	t.Helper()
	return call[api.SessionKeepaliveBatchRequest, api.SessionKeepaliveBatchResponse](t, cl, api.MethodSessionKeepaliveBatch,
		&api.SessionKeepaliveBatchRequest{IDs: ids})
}

// A batch renews every live session it lists (they outlive a session
// created with them that gets no keepalive) and reports the unknown and
// destroyed ones per id, in order, without failing the others.
func TestKeepaliveBatchRenewsLiveSessionsAndReportsDeadOnesPerID(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	const ttl = 2 * time.Second // the minimum for the test cluster's timeouts
	a := c.newSession(lead, ttl, 0)
	b := c.newSession(lead, ttl, 0)
	gone := c.newSession(lead, ttl, 0)
	idle := c.newSession(lead, ttl, 0) // never renewed: expires after ttl
	start := time.Now()
	mustCall[api.SessionDestroyRequest, api.SessionDestroyResponse](t, c.clients[lead], api.MethodSessionDestroy,
		&api.SessionDestroyRequest{ID: gone})
	unknown := session.ID(1 << 40)
	ids := []session.ID{a, unknown, b, gone}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := keepaliveBatch(t, c.clients[lead], ids...)
		if err != nil {
			t.Fatalf("batch keepalive: %v", err)
		}
		if len(resp.Results) != len(ids) {
			t.Fatalf("%d results for %d ids: %+v", len(resp.Results), len(ids), resp.Results)
		}
		for i, id := range ids {
			r := resp.Results[i]
			live := id == a || id == b
			if live && (r.Err() != nil || r.TTL != int64(ttl)) {
				t.Fatalf("live session %s: result %+v; want TTL %v", id, r, ttl)
			}
			if !live && (!errors.Is(r.Err(), api.ErrSessionNotFound) || r.TTL != 0 || r.Message == "") {
				t.Fatalf("dead session %s: result %+v; want CodeSessionNotFound with a message", id, r)
			}
		}
		_, idleAlive := c.servers[lead].fsm.Session(idle)
		if !idleAlive && time.Since(start) > 2*ttl {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session without keepalives is still alive (%v) after %v", idleAlive, time.Since(start))
		}
		time.Sleep(ttl / 4) // the keepalive schedule, not a wait for a condition
	}
	for _, id := range []session.ID{a, b} {
		if _, ok := c.servers[lead].fsm.Session(id); !ok {
			t.Fatalf("session %s expired although every batch renewed it", id)
		}
	}
}

// forwardCounter stands in for the leader's peer port: it counts the
// keepalive forwards a follower makes and hands them to the leader.
type forwardCounter struct {
	single, batch atomic.Int64
}

// redirectForwards points the follower f's forwarding to the leader at a
// counting proxy of the leader's keepalive forwards.
func (c *testCluster) redirectForwards(f, lead consensus.NodeID) *forwardCounter {
	t := c.t
	fc := &forwardCounter{}
	srv, err := rpc.NewServer(rpc.ServerConfig{ClusterID: "test", Name: "forward counter", Errors: c.table})
	if err != nil {
		t.Fatal(err)
	}
	ls := c.servers[lead]
	if err := rpc.Handle(srv, methodForwardKeepalive, "forward-keepalive", func(ctx context.Context, req *api.SessionKeepaliveRequest) (*api.SessionKeepaliveResponse, error) {
		fc.single.Add(1)
		return ls.onForwardKeepalive(ctx, req)
	}); err != nil {
		t.Fatal(err)
	}
	if err := rpc.Handle(srv, methodForwardKeepaliveBatch, "forward-keepalive-batch", func(ctx context.Context, req *api.SessionKeepaliveBatchRequest) (*api.SessionKeepaliveBatchResponse, error) {
		fc.batch.Add(1)
		return ls.onForwardKeepaliveBatch(ctx, req)
	}); err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	p := c.servers[f].peers
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.clients[lead]; old != nil {
		_ = old.Close()
		delete(p.clients, lead)
	}
	addrs := make(map[consensus.NodeID]string, len(p.addrs))
	for id, a := range p.addrs {
		addrs[id] = a
	}
	addrs[lead] = l.Addr().String()
	p.addrs = addrs
	return fc
}

// A follower forwards a whole batch to the leader in one peer call.
func TestKeepaliveBatchOnAFollowerIsForwardedInOneCall(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	f := c.follower()
	ids := make([]session.ID, 50)
	for i := range ids {
		ids[i] = c.newSession(lead, 10*time.Second, 0)
	}
	ids = append(ids, session.ID(1<<40)) // unknown
	fwd := c.redirectForwards(f, lead)
	resp, err := keepaliveBatch(t, c.clients[f], ids...)
	if err != nil {
		t.Fatalf("batch keepalive on a follower: %v", err)
	}
	if len(resp.Results) != len(ids) {
		t.Fatalf("%d results for %d ids", len(resp.Results), len(ids))
	}
	for i, r := range resp.Results[:len(ids)-1] {
		if r.Err() != nil || r.TTL != int64(10*time.Second) {
			t.Fatalf("session %s: %+v", ids[i], r)
		}
	}
	if last := resp.Results[len(ids)-1]; !errors.Is(last.Err(), api.ErrSessionNotFound) {
		t.Fatalf("unknown session: %+v", last)
	}
	if b, s := fwd.batch.Load(), fwd.single.Load(); b != 1 || s != 0 {
		t.Fatalf("the follower made %d batch and %d single forwards for one batch of %d; want 1 and 0", b, s, len(ids))
	}
	// The single method still forwards one call per keepalive.
	if _, err := call[api.SessionKeepaliveRequest, api.SessionKeepaliveResponse](t, c.clients[f], api.MethodSessionKeepalive,
		&api.SessionKeepaliveRequest{ID: ids[0]}); err != nil {
		t.Fatalf("single keepalive on a follower: %v", err)
	}
	if s := fwd.single.Load(); s != 1 {
		t.Fatalf("%d single forwards for one keepalive", s)
	}
}

// TestKeepaliveBatchOnALeaderCutOffIsNotAcknowledged: as for a single
// keepalive (TestKeepaliveOnALeaderCutOffIsNotAcknowledged), a batch is
// answered only after a majority confirms the leader.
func TestKeepaliveBatchOnALeaderCutOffIsNotAcknowledged(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	a := c.newSession(lead, 3*time.Second, 0)
	b := c.newSession(lead, 3*time.Second, 0)
	if _, err := keepaliveBatch(t, c.clients[lead], a, b); err != nil {
		t.Fatalf("batch keepalive with a majority: %v", err)
	}
	for id := range c.servers {
		if id != lead {
			c.stop(id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp api.SessionKeepaliveBatchResponse
	err := c.clients[lead].Call(ctx, rpc.Method(api.MethodSessionKeepaliveBatch), &api.SessionKeepaliveBatchRequest{IDs: []session.ID{a, b}}, &resp)
	if err == nil {
		t.Fatalf("a leader without a majority acknowledged a batch keepalive: %+v", resp.Results)
	}
}

// A batch over the limit is refused as a whole, on the client port and on
// the forwarding one, before it touches any session.
func TestKeepaliveBatchOverTheLimitIsRefused(t *testing.T) {
	c := newTestCluster(t, 1)
	lead := c.leader()
	a := c.newSession(lead, 10*time.Second, 0)
	ids := make([]session.ID, api.MaxKeepaliveBatch+1)
	for i := range ids {
		ids[i] = a
	}
	_, err := keepaliveBatch(t, c.clients[lead], ids...)
	var ae *api.Error
	if !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("batch of %d: %v; want api.ErrInvalid", len(ids), err)
	}
	if _, ferr := c.servers[lead].onForwardKeepaliveBatch(context.Background(), &api.SessionKeepaliveBatchRequest{IDs: ids}); !errors.As(ferr, &ae) || ae.Code != api.CodeInvalid {
		t.Fatalf("forwarded batch of %d: %v; want CodeInvalid", len(ids), ferr)
	}
	// At the limit it is served.
	resp, err := keepaliveBatch(t, c.clients[lead], ids[:api.MaxKeepaliveBatch]...)
	if err != nil || len(resp.Results) != api.MaxKeepaliveBatch {
		t.Fatalf("batch at the limit: %v", err)
	}
}
