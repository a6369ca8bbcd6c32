package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
)

func TestLeaderEndpointIsTheLeaderOfTheHighestTerm(t *testing.T) {
	eps := []*endpoint{{addr: "a"}, {addr: "b"}, {addr: "c"}}
	st := func(id, leader, term uint64) *api.ClusterStatusResponse {
		return &api.ClusterStatusResponse{Node: api.MemberStatus{ID: id}, Leader: leader, Term: term}
	}
	cases := []struct {
		name string
		resp []*api.ClusterStatusResponse
		want *endpoint
	}{
		{"all agree", []*api.ClusterStatusResponse{st(1, 2, 5), st(2, 2, 5), st(3, 2, 5)}, eps[1]},
		{"a newer term wins", []*api.ClusterStatusResponse{st(1, 1, 4), st(2, 3, 5), st(3, 3, 5)}, eps[2]},
		{"the old leader still thinks it leads", []*api.ClusterStatusResponse{st(1, 1, 4), st(2, 2, 6), nil}, eps[1]},
		{"no answers", []*api.ClusterStatusResponse{nil, nil, nil}, nil},
		{"no leader", []*api.ClusterStatusResponse{st(1, 0, 5), st(2, 0, 5), nil}, nil},
		{"the leader is not an endpoint", []*api.ClusterStatusResponse{st(1, 4, 5), st(2, 4, 5), st(3, 4, 5)}, nil},
		{"two endpoints are one node", []*api.ClusterStatusResponse{st(1, 1, 5), st(1, 1, 5), st(3, 1, 5)}, nil},
		{"a node without an id", []*api.ClusterStatusResponse{st(0, 1, 5), st(2, 1, 5), st(1, 1, 5)}, nil},
	}
	for _, tc := range cases {
		if got := leaderEndpoint(eps, tc.resp); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// routedCluster is a fake 3-node cluster whose nodes answer status as
// nodes 1..3 following leader, and count the puts and stale gets each
// one serves.
func routedCluster(t *testing.T, leader uint64) (*fakeCluster, []*atomic.Int64, []*atomic.Int64) {
	fc := newFakeCluster(t, 3)
	puts := []*atomic.Int64{{}, {}, {}}
	gets := []*atomic.Int64{{}, {}, {}}
	for i, n := range fc.nodes {
		n.set(func(n *fakeNode) {
			n.id, n.leader = uint64(i+1), leader
			n.hook = func(ctx context.Context, method uint16) error {
				switch method {
				case api.MethodKVPut:
					puts[i].Add(1)
				case api.MethodKVGet:
					gets[i].Add(1)
				}
				return nil
			}
		})
	}
	return fc, puts, gets
}

func routingClient(t *testing.T, fc *fakeCluster) *Client {
	c, _ := newTestClient(t, fc.addrs(), func(cfg *Config) { cfg.NoLeaderRouting = false })
	return c
}

// waitRouted puts until a put lands on node want (the lookup runs in the
// background after the first leader-bound call).
func waitRouted(t *testing.T, c *Client, puts []*atomic.Int64, want int) {
	t.Helper()
	waitFor(t, 10*time.Second, "a put on the leader's endpoint", func() bool {
		if _, err := c.KV().Put(testCtx(t), "k", []byte("v")); err != nil {
			t.Fatalf("put: %v", err)
		}
		return puts[want].Load() > 0
	})
}

func TestWritesGoToTheLeadersEndpointAndStaleReadsDoNot(t *testing.T) {
	fc, puts, gets := routedCluster(t, 3)
	c := routingClient(t, fc)
	waitRouted(t, c, puts, 2)
	before := [3]int64{puts[0].Load(), puts[1].Load(), puts[2].Load()}
	for range 20 {
		if _, err := c.KV().Put(testCtx(t), "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.KV().Get(testCtx(t), "k", WithStale()); err != nil {
			t.Fatal(err)
		}
	}
	if d := puts[2].Load() - before[2]; d != 20 {
		t.Errorf("the leader's endpoint served %d of 20 puts", d)
	}
	if puts[0].Load() != before[0] || puts[1].Load() != before[1] {
		t.Errorf("followers served puts after the leader was known: %d, %d", puts[0].Load()-before[0], puts[1].Load()-before[1])
	}
	// Stale reads stay on the current endpoint (the first): they spread
	// the load and any node serves them.
	if gets[0].Load() != 20 || gets[2].Load() != 0 {
		t.Errorf("stale gets: %d on the current endpoint, %d on the leader's; want 20 and 0", gets[0].Load(), gets[2].Load())
	}
	// A linearizable read goes to the leader too.
	if _, err := c.KV().Get(testCtx(t), "k"); err != nil {
		t.Fatal(err)
	}
	if gets[2].Load() != 1 {
		t.Errorf("a linearizable get did not go to the leader's endpoint")
	}
}

func TestRoutedCallThatFailsMovesToTheRotationAndRoutingRecovers(t *testing.T) {
	fc, puts, _ := routedCluster(t, 3)
	c := routingClient(t, fc)
	waitRouted(t, c, puts, 2)
	// The leader dies; the others elect node 2.
	fc.nodes[2].set(func(n *fakeNode) { n.fail = api.Errorf(api.CodeUnavailable, "node down") })
	for _, n := range fc.nodes[:2] {
		n.set(func(n *fakeNode) { n.leader = 2 })
	}
	if _, err := c.KV().Put(testCtx(t), "k", []byte("v")); err != nil {
		t.Fatalf("a put after the leader's endpoint failed: %v; want it served elsewhere", err)
	}
	waitRouted(t, c, puts, 1)
	before := puts[0].Load()
	for range 10 {
		if _, err := c.KV().Put(testCtx(t), "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if puts[0].Load() != before {
		t.Errorf("%d puts went to a follower after the new leader was found", puts[0].Load()-before)
	}
}

func TestAmbiguousEndpointsAreNotRouted(t *testing.T) {
	// Every node answers as node 1, the leader (two endpoints behind one
	// address would look like this): the client must not guess.
	fc := newFakeCluster(t, 3)
	c := routingClient(t, fc)
	for range 10 {
		if _, err := c.KV().Put(testCtx(t), "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the lookup to finish", func() bool {
		c.route.mu.Lock()
		defer c.route.mu.Unlock()
		return !c.route.last.IsZero() && !c.route.running
	})
	if l := c.route.leader.Load(); l != nil {
		t.Fatalf("routed to %s although every endpoint claims to be node 1", l.addr)
	}
}

// A leader cut off from its peers (or paused) still accepts a routed call
// but never answers it. The call must move on to the other endpoints long
// before its RequestTimeout, keeping its exactly-once identity.
func TestRoutedCallToASilentLeaderMovesOnBeforeRequestTimeout(t *testing.T) {
	fc, puts, _ := routedCluster(t, 3)
	c, _ := newTestClient(t, fc.addrs(), func(cfg *Config) {
		cfg.NoLeaderRouting = false
		cfg.RequestTimeout = time.Minute
	})
	waitRouted(t, c, puts, 2)
	before := puts[0].Load() + puts[1].Load()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var hung atomic.Int64
	fc.nodes[2].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			if method == api.MethodKVPut {
				hung.Add(1)
				select {
				case <-release:
				case <-ctx.Done():
				}
				return api.Errorf(api.CodeUnavailable, "released")
			}
			return nil
		}
	})
	for _, n := range fc.nodes[:2] {
		n.set(func(n *fakeNode) { n.leader = 1 })
	}
	// Well under RequestTimeout: without the routed bound the call would
	// wait here for the silent leader until this deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if _, err := c.KV().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("a put whose routed attempt hung: %v; want it served by another endpoint", err)
	}
	if hung.Load() == 0 {
		t.Fatal("the put never reached the silent leader: the test proves nothing")
	}
	if puts[0].Load()+puts[1].Load() == before {
		t.Fatal("no other endpoint served the put")
	}
}
