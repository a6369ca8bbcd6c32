package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// testCluster runs n servers in-process over loopback rpc with in-memory
// stores, fast ticks, and rpc clients to each.
type testCluster struct {
	t       *testing.T
	members []Member
	stores  map[consensus.NodeID]*inmem.Store
	servers map[consensus.NodeID]*Server
	clients map[consensus.NodeID]*rpc.Client
	peerL   map[consensus.NodeID]net.Listener
	table   *rpc.ErrorTable
	// configure, if set, adjusts each server's config before it starts.
	configure func(consensus.NodeID, *Config)
}

const testTick = 10 * time.Millisecond

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return newTestClusterWith(t, n, nil)
}

func newTestClusterWith(t *testing.T, n int, configure func(consensus.NodeID, *Config)) *testCluster {
	t.Helper()
	table, err := errorTable()
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, stores: map[consensus.NodeID]*inmem.Store{}, servers: map[consensus.NodeID]*Server{},
		clients: map[consensus.NodeID]*rpc.Client{}, peerL: map[consensus.NodeID]net.Listener{}, table: table,
		configure: configure}
	for i := 1; i <= n; i++ {
		id := consensus.NodeID(i)
		l := listen(t)
		c.peerL[id] = l
		c.members = append(c.members, Member{ID: id, Name: fmt.Sprintf("n%d", i), PeerAddr: l.Addr().String()})
		c.stores[id] = inmem.NewStore()
	}
	for _, m := range c.members {
		c.start(m.ID)
	}
	t.Cleanup(c.closeAll)
	return c
}

func (c *testCluster) start(id consensus.NodeID) {
	c.t.Helper()
	peerL := c.peerL[id]
	if peerL == nil {
		// Restart on the same peer address.
		var err error
		peerL, err = net.Listen("tcp", c.members[id-1].PeerAddr)
		if err != nil {
			c.t.Fatal(err)
		}
	}
	c.peerL[id] = nil
	logger := hclog.NewNullLogger()
	if os.Getenv("LOCKD_TEST_LOG") != "" {
		logger = hclog.New(&hclog.LoggerOptions{Name: c.members[id-1].Name, Level: hclog.Debug})
	}
	cfg := Config{
		ID: id, Name: c.members[id-1].Name, Members: c.members, ClusterID: "test",
		ClientListener: listen(c.t), PeerListener: peerL,
		LogStore: c.stores[id], StableStore: c.stores[id],
		TickInterval: testTick, ElectionTicks: 10, Logger: logger,
	}
	if c.configure != nil {
		c.configure(id, &cfg)
	}
	s, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.servers[id] = s
	cl, err := rpc.NewClient(s.ClientAddr(), rpc.ClientConfig{ClusterID: "test", Errors: c.table,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	c.clients[id] = cl
}

func (c *testCluster) stop(id consensus.NodeID) {
	if s := c.servers[id]; s != nil {
		_ = c.clients[id].Close()
		_ = s.Close()
		delete(c.servers, id)
		delete(c.clients, id)
	}
}

func (c *testCluster) closeAll() {
	for id := range c.servers {
		c.stop(id)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leader waits for a leader that has taken over the sessions.
func (c *testCluster) leader() consensus.NodeID {
	c.t.Helper()
	var lead consensus.NodeID
	waitFor(c.t, 10*time.Second, "a leader", func() bool {
		for id, s := range c.servers {
			if l, term := s.node.Leader(); l == id && s.promotedTerm() == term {
				lead = id
				return true
			}
		}
		return false
	})
	return lead
}

func (c *testCluster) follower() consensus.NodeID {
	lead := c.leader()
	for id := range c.servers {
		if id != lead {
			return id
		}
	}
	c.t.Fatal("no follower")
	return 0
}

func call[Req, Resp any](t *testing.T, cl *rpc.Client, m uint16, req *Req) (*Resp, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp Resp
	err := cl.Call(ctx, rpc.Method(m), req, &resp)
	return &resp, err
}

func mustCall[Req, Resp any](t *testing.T, cl *rpc.Client, m uint16, req *Req) *Resp {
	t.Helper()
	resp, err := call[Req, Resp](t, cl, m, req)
	if err != nil {
		t.Fatalf("method %d: %v", m, err)
	}
	return resp
}

func (c *testCluster) newSession(id consensus.NodeID, ttl, lockDelay time.Duration) session.ID {
	c.t.Helper()
	resp := mustCall[api.SessionCreateRequest, api.SessionCreateResponse](c.t, c.clients[id], api.MethodSessionCreate,
		&api.SessionCreateRequest{TTL: int64(ttl), LockDelay: int64(lockDelay)})
	return resp.Session.ID
}

func TestWritesOnFollowerAreForwardedAndReadsAreLinearizable(t *testing.T) {
	c := newTestCluster(t, 3)
	f := c.follower()
	put := mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[f], api.MethodKVPut, &api.KVPutRequest{Key: "cfg/a", Value: []byte("1")})
	if put.Revision == 0 {
		t.Fatalf("put through a follower: %+v", put)
	}
	for id := range c.servers {
		get := mustCall[api.KVGetRequest, api.KVGetResponse](t, c.clients[id], api.MethodKVGet, &api.KVGetRequest{Key: "cfg/a"})
		if get.KV == nil || string(get.KV.Value) != "1" || get.Read.Revision < put.Revision {
			t.Fatalf("linearizable get on node %d after an acknowledged put: %+v", id, get)
		}
	}
	stale := mustCall[api.KVGetRequest, api.KVGetResponse](t, c.clients[f], api.MethodKVGet, &api.KVGetRequest{Key: "cfg/a", Read: api.ReadHeader{Stale: true}})
	if !stale.Read.Stale || stale.Read.Node == "" {
		t.Fatalf("a stale read must say so and where it was served: %+v", stale.Read)
	}
	list := mustCall[api.KVListRequest, api.KVListResponse](t, c.clients[f], api.MethodKVList, &api.KVListRequest{Prefix: "cfg/"})
	if len(list.KVs) != 1 {
		t.Fatalf("list: %+v", list)
	}
	txn := mustCall[api.KVTxnRequest, api.KVTxnResponse](t, c.clients[f], api.MethodKVTxn, &api.KVTxnRequest{
		Compares: []api.Compare{{Key: "cfg/a", Target: api.CompareValue, Op: api.Equal, Value: []byte("1")}},
		Then:     []api.Op{{Type: api.OpPut, Key: "cfg/a", Value: []byte("2")}},
	})
	if !txn.Succeeded {
		t.Fatalf("txn: %+v", txn)
	}
	del := mustCall[api.KVDeleteRequest, api.KVDeleteResponse](t, c.clients[f], api.MethodKVDelete, &api.KVDeleteRequest{Key: "cfg/", Prefix: true})
	if del.Deleted != 1 {
		t.Fatalf("delete: %+v", del)
	}
	_, err := call[api.KVPutRequest, api.KVPutResponse](t, c.clients[f], api.MethodKVPut, &api.KVPutRequest{Key: ""})
	if !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("an empty key should fail with ErrInvalid across the wire, got %v", err)
	}
}

func TestExactlyOnceAcrossRetries(t *testing.T) {
	c := newTestCluster(t, 3)
	f := c.follower()
	req := &api.KVPutRequest{Write: api.WriteHeader{ClientID: 77, Seq: 1}, Key: "n", Value: []byte("x")}
	first := mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[f], api.MethodKVPut, req)
	again := mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[c.leader()], api.MethodKVPut, req)
	if again.Revision != first.Revision {
		t.Fatalf("a retried write applied twice: revisions %d and %d", first.Revision, again.Revision)
	}
	get := mustCall[api.KVGetRequest, api.KVGetResponse](t, c.clients[f], api.MethodKVGet, &api.KVGetRequest{Key: "n"})
	if get.KV.Version != 1 {
		t.Fatalf("version %d after a retry, want 1", get.KV.Version)
	}
}

func TestBlockingAcquireSurvivesLeaderChangeAndGetsLargerToken(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	f := c.follower()
	a := c.newSession(f, 3*time.Second, 0)
	b := c.newSession(f, 3*time.Second, 0)
	keepalive := func(ids ...session.ID) {
		for _, id := range ids {
			for nid := range c.servers {
				if _, err := call[api.SessionKeepaliveRequest, api.SessionKeepaliveResponse](t, c.clients[nid], api.MethodSessionKeepalive, &api.SessionKeepaliveRequest{ID: id}); err == nil {
					break
				}
			}
		}
	}
	g := mustCall[api.LockAcquireRequest, api.LockAcquireResponse](t, c.clients[f], api.MethodLockAcquire,
		&api.LockAcquireRequest{Name: "db", Session: a, Mode: api.Exclusive})
	done := make(chan *api.LockAcquireResponse, 1)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var resp api.LockAcquireResponse
		if err := c.clients[f].Call(ctx, rpc.Method(api.MethodLockAcquire), &api.LockAcquireRequest{Name: "db", Session: b, Mode: api.Exclusive, Wait: true}, &resp); err != nil {
			errc <- err
			return
		}
		done <- &resp
	}()
	waitFor(t, 5*time.Second, "b queued", func() bool { return len(c.servers[f].fsm.Lock("db").Waiters) == 1 })
	c.stop(lead) // the leader dies while b waits on a follower
	newLead := c.leader()
	keepalive(a, b)
	mustCall[api.LockReleaseRequest, api.LockReleaseResponse](t, c.clients[newLead], api.MethodLockRelease,
		&api.LockReleaseRequest{Name: "db", Session: a, Token: g.Grant.Token})
	select {
	case resp := <-done:
		if resp.Grant.Session != b || resp.Grant.Token <= g.Grant.Token {
			t.Fatalf("waiter's grant %+v should carry a larger token than %d", resp.Grant, g.Grant.Token)
		}
	case err := <-errc:
		t.Fatalf("blocking acquire failed across the leader change: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("blocking acquire never returned")
	}
}

func TestSessionExpiryPassesLockAndDropsEphemeralKeys(t *testing.T) {
	c := newTestCluster(t, 3)
	f := c.follower()
	// TTL at the minimum (2 s for these timeouts), lock-delay 100 ms.
	a := c.newSession(f, 2*time.Second, 100*time.Millisecond)
	b := c.newSession(f, 20*time.Second, 0)
	g := mustCall[api.LockAcquireRequest, api.LockAcquireResponse](t, c.clients[f], api.MethodLockAcquire,
		&api.LockAcquireRequest{Name: "job", Session: a, Mode: api.Exclusive})
	mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[f], api.MethodKVPut, &api.KVPutRequest{Key: "members/a", Value: []byte("x"), Session: a})
	start := time.Now()
	// a never sends a keepalive: it expires, and b (waiting) gets the lock.
	resp := mustCall[api.LockAcquireRequest, api.LockAcquireResponse](t, c.clients[f], api.MethodLockAcquire,
		&api.LockAcquireRequest{Name: "job", Session: b, Mode: api.Exclusive, Wait: true, WaitTimeout: int64(8 * time.Second)})
	if resp.Grant.Session != b || resp.Grant.Token <= g.Grant.Token {
		t.Fatalf("after a's expiry b got %+v; want a larger token than %d", resp.Grant, g.Grant.Token)
	}
	t.Logf("lock passed %v after the holder's last contact (TTL 2s + lock-delay 100ms)", time.Since(start).Round(time.Millisecond))
	get := mustCall[api.KVGetRequest, api.KVGetResponse](t, c.clients[f], api.MethodKVGet, &api.KVGetRequest{Key: "members/a"})
	if get.KV != nil {
		t.Fatalf("ephemeral key outlived its session: %+v", get.KV)
	}
	_, err := call[api.SessionKeepaliveRequest, api.SessionKeepaliveResponse](t, c.clients[f], api.MethodSessionKeepalive, &api.SessionKeepaliveRequest{ID: a})
	if !errors.Is(err, api.ErrSessionNotFound) {
		t.Fatalf("keepalive of an expired session: %v, want ErrSessionNotFound", err)
	}
}

func TestSessionSurvivesFailover(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	f := c.follower()
	a := c.newSession(f, 2*time.Second, 0)
	stopKA := make(chan struct{})
	kaDone := make(chan struct{})
	go func() { // a client's keepalive loop: every TTL/3, retrying fast
		defer close(kaDone)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			var resp api.SessionKeepaliveResponse
			err := c.clients[f].Call(ctx, rpc.Method(api.MethodSessionKeepalive), &api.SessionKeepaliveRequest{ID: a}, &resp)
			cancel()
			wait := 600 * time.Millisecond
			if err != nil {
				wait = 50 * time.Millisecond
			}
			select {
			case <-stopKA:
				return
			case <-time.After(wait):
			}
		}
	}()
	time.Sleep(time.Second) // let keepalives run before the failover (the test's subject is time passing)
	c.stop(lead)
	newLead := c.leader()
	time.Sleep(3 * time.Second) // longer than the TTL, with keepalives going to the new leader
	close(stopKA)
	<-kaDone
	if _, ok := c.servers[newLead].fsm.Session(a); !ok {
		t.Fatal("a live session expired across a failover")
	}
}

func TestWatchResumesOnAnotherNodeWithoutGap(t *testing.T) {
	c := newTestCluster(t, 3)
	ids := []consensus.NodeID{}
	for id := range c.servers {
		ids = append(ids, id)
	}
	first, second := ids[0], ids[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := c.clients[first].Stream(ctx, rpc.Method(api.MethodWatch), &api.WatchRequest{Key: "w/", Prefix: true, FromRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[second], api.MethodKVPut, &api.KVPutRequest{Key: fmt.Sprintf("w/%d", i), Value: []byte{byte(i)}})
	}
	var got []api.Event
	next := int64(1)
	for len(got) < 3 {
		var m api.WatchMessage
		if err := st.Recv(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Events...)
		next = m.NextRevision
	}
	_ = st.Close()
	// Resume on the other node from the last NextRevision.
	st2, err := c.clients[second].Stream(ctx, rpc.Method(api.MethodWatch), &api.WatchRequest{Key: "w/", Prefix: true, FromRevision: next})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	for len(got) < 5 {
		var m api.WatchMessage
		if err := st2.Recv(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Events...)
	}
	for i, e := range got {
		if e.KV.Key != fmt.Sprintf("w/%d", i) {
			t.Fatalf("event %d is %s: gap or duplicate in %v", i, e.KV.Key, got)
		}
		if i > 0 && e.Revision <= got[i-1].Revision {
			t.Fatalf("revisions out of order: %d after %d", e.Revision, got[i-1].Revision)
		}
	}
}

func TestLockAPIErrorsAndIntrospection(t *testing.T) {
	c := newTestCluster(t, 3)
	f := c.follower()
	a := c.newSession(f, 10*time.Second, 0)
	b := c.newSession(f, 10*time.Second, 0)
	g := mustCall[api.LockAcquireRequest, api.LockAcquireResponse](t, c.clients[f], api.MethodLockAcquire, &api.LockAcquireRequest{Name: "x", Session: a, Mode: api.Exclusive})
	_, err := call[api.LockAcquireRequest, api.LockAcquireResponse](t, c.clients[f], api.MethodLockAcquire, &api.LockAcquireRequest{Name: "x", Session: b, Mode: api.Exclusive})
	if !errors.Is(err, api.ErrLockHeld) {
		t.Fatalf("try-acquire of a held lock: %v", err)
	}
	_, err = call[api.LockAcquireRequest, api.LockAcquireResponse](t, c.clients[f], api.MethodLockAcquire,
		&api.LockAcquireRequest{Name: "x", Session: b, Mode: api.Exclusive, Wait: true, WaitTimeout: int64(200 * time.Millisecond)})
	if !errors.Is(err, api.ErrLockHeld) {
		t.Fatalf("a wait that times out: %v", err)
	}
	waitFor(t, 5*time.Second, "the abandoned wait withdrawn", func() bool { return len(c.servers[f].fsm.Lock("x").Waiters) == 0 })
	chk := mustCall[api.LockCheckRequest, api.LockCheckResponse](t, c.clients[f], api.MethodLockCheck, &api.LockCheckRequest{Name: "x", Token: g.Grant.Token})
	if !chk.Current || chk.Grant.Session != a {
		t.Fatalf("check-token: %+v", chk)
	}
	list := mustCall[api.LockListRequest, api.LockListResponse](t, c.clients[f], api.MethodLockList, &api.LockListRequest{})
	if len(list.Locks) != 1 || list.Locks[0].Holders[0].Token != g.Grant.Token {
		t.Fatalf("lock list: %+v", list)
	}
	_, err = call[api.LockReleaseRequest, api.LockReleaseResponse](t, c.clients[f], api.MethodLockRelease, &api.LockReleaseRequest{Name: "x", Session: a, Token: g.Grant.Token + 100})
	if !errors.Is(err, api.ErrStaleToken) {
		t.Fatalf("release with a wrong token: %v", err)
	}
	_, err = call[api.SessionCreateRequest, api.SessionCreateResponse](t, c.clients[f], api.MethodSessionCreate, &api.SessionCreateRequest{TTL: int64(time.Millisecond)})
	if !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("a TTL below the minimum: %v", err)
	}
	sl := mustCall[api.SessionListRequest, api.SessionListResponse](t, c.clients[f], api.MethodSessionList, &api.SessionListRequest{})
	if len(sl.Sessions) != 2 {
		t.Fatalf("session list: %+v", sl)
	}
	mustCall[api.SessionDestroyRequest, api.SessionDestroyResponse](t, c.clients[f], api.MethodSessionDestroy, &api.SessionDestroyRequest{ID: a})
	_, err = call[api.SessionInfoRequest, api.SessionInfoResponse](t, c.clients[f], api.MethodSessionInfo, &api.SessionInfoRequest{ID: a})
	if !errors.Is(err, api.ErrSessionNotFound) {
		t.Fatalf("info of a destroyed session: %v", err)
	}
	st := mustCall[api.ClusterStatusRequest, api.ClusterStatusResponse](t, c.clients[c.leader()], api.MethodClusterStatus, &api.ClusterStatusRequest{})
	if st.Leader == 0 || len(st.Members) != 3 || st.Node.Role != "leader" {
		t.Fatalf("cluster status: %+v", st)
	}
}
