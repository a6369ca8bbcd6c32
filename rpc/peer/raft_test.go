package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
	"github.com/lockd/lockd/rpc"
)

// recSM records the commands it applies, in order.
type recSM struct {
	mu  sync.Mutex
	log []string
}

func (s *recSM) Apply(e consensus.Entry) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, fmt.Sprintf("%d:%s", e.Index, e.Data))
	return e.Index
}
func (s *recSM) Snapshot(io.Writer) error { return errors.New("no snapshots") }
func (s *recSM) Restore(io.Reader) error  { return errors.New("no snapshots") }
func (s *recSM) applied() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// rpcNode is a consensus.Node whose peers are reached over rpc on loopback.
type rpcNode struct {
	id    consensus.NodeID
	addr  string
	store *inmem.Store
	sm    *recSM
	srv   *rpc.Server
	tr    *PeerTransport
	node  *consensus.Node
	serve chan error
}

type rpcCluster struct {
	t     *testing.T
	ids   []consensus.NodeID
	addrs map[consensus.NodeID]string
	nodes map[consensus.NodeID]*rpcNode
}

func newRPCCluster(t *testing.T, n int) *rpcCluster {
	c := &rpcCluster{t: t, addrs: map[consensus.NodeID]string{}, nodes: map[consensus.NodeID]*rpcNode{}}
	for i := 1; i <= n; i++ {
		id := consensus.NodeID(i)
		l := listen(t)
		l.Close() // reserve an address; start listens on it again
		c.ids = append(c.ids, id)
		c.addrs[id] = l.Addr().String()
		c.nodes[id] = &rpcNode{id: id, addr: l.Addr().String(), store: inmem.NewStore()}
	}
	for _, id := range c.ids {
		c.start(id)
	}
	t.Cleanup(func() {
		for _, id := range c.ids {
			c.stop(id)
		}
	})
	return c
}

// start starts node id (again) from its store: server, transport, node.
func (c *rpcCluster) start(id consensus.NodeID) {
	t := c.t
	t.Helper()
	rn := c.nodes[id]
	peers := map[consensus.NodeID]string{}
	for pid, a := range c.addrs {
		if pid != id {
			peers[pid] = a
		}
	}
	cfg := PeerTransportConfig{ID: id, ClusterID: testCluster, Peers: peers, Rand: rand.New(rand.NewSource(int64(id))),
		Logger: testLogger(t, fmt.Sprint("rpc", id))}
	cfg.Client.BackoffMin, cfg.Client.BackoffMax = 5*time.Millisecond, 50*time.Millisecond
	tr, err := NewPeerTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t)
	if err := tr.Register(srv); err != nil {
		t.Fatal(err)
	}
	rn.sm = &recSM{}
	node, err := consensus.StartNode(consensus.NodeConfig{
		Raft:         consensus.Config{ID: id, Voters: c.ids, ElectionTicks: 10, HeartbeatTicks: 1, Rand: rand.New(rand.NewSource(int64(id) * 7))},
		LogStore:     rn.store,
		StableStore:  rn.store,
		Transport:    tr,
		StateMachine: rn.sm,
		TickInterval: 10 * time.Millisecond,
		Logger:       testLogger(t, fmt.Sprint("node", id)),
		PeerAddrs:    c.addrs,
	})
	if err != nil {
		t.Fatal(err)
	}
	tr.SetHandler(node.Step)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := listenOn(rn.addr)
		if err == nil {
			rn.serve = make(chan error, 1)
			go func() { rn.serve <- srv.Serve(ln) }()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listening again on %s: %v", rn.addr, err)
		}
		time.Sleep(10 * time.Millisecond) // poll until the port is free again
	}
	rn.srv, rn.tr, rn.node = srv, tr, node
}

func (c *rpcCluster) stop(id consensus.NodeID) {
	rn := c.nodes[id]
	if rn.node == nil {
		return
	}
	rn.node.Stop()
	rn.tr.Close()
	rn.srv.Close()
	<-rn.serve
	rn.node, rn.tr, rn.srv = nil, nil, nil
}

func (c *rpcCluster) leader() consensus.NodeID {
	var lead consensus.NodeID
	var term consensus.Term
	for _, rn := range c.nodes {
		if rn.node == nil {
			continue
		}
		if st := rn.node.Status(); st.Role == consensus.Leader && st.Term > term {
			lead, term = rn.id, st.Term
		}
	}
	return lead
}

func (c *rpcCluster) propose(ctx context.Context, data string) {
	c.t.Helper()
	for {
		if lead := c.leader(); lead != consensus.None {
			_, err := c.nodes[lead].node.Propose(ctx, []byte(data))
			if err == nil {
				return
			}
			if !errors.Is(err, consensus.ErrNotLeader) && !errors.Is(err, consensus.ErrProposalLost) {
				c.t.Fatalf("propose %q: %v", data, err)
			}
		}
		if ctx.Err() != nil {
			c.t.Fatalf("propose %q: %v", data, ctx.Err())
		}
		time.Sleep(2 * time.Millisecond) // poll for a leader
	}
}

// converged waits until every running node applied want, then checks
// that their logs agree entry by entry (Log Matching) and every state
// machine applied the same sequence (State Machine Safety).
func (c *rpcCluster) converged(want int) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, fmt.Sprintf("every node to apply %d commands", want), func() bool {
		for _, rn := range c.nodes {
			if rn.node != nil && len(rn.sm.applied()) < want {
				return false
			}
		}
		return true
	})
	var ref []string
	var refLog []consensus.Entry
	for _, id := range c.ids {
		rn := c.nodes[id]
		got := rn.sm.applied()[:want]
		last, _ := rn.store.LastIndex()
		log, err := rn.store.Entries(1, last+1)
		if err != nil {
			c.t.Fatal(err)
		}
		if ref == nil {
			ref, refLog = got, log
			continue
		}
		if !slices.Equal(got, ref) {
			c.t.Fatalf("node %d applied %v, node %d applied %v", id, got, c.ids[0], ref)
		}
		for i := range min(len(log), len(refLog)) {
			if log[i].Index == refLog[i].Index && log[i].Term == refLog[i].Term && string(log[i].Data) != string(refLog[i].Data) {
				c.t.Fatalf("log matching broken at index %d between nodes %d and %d", log[i].Index, id, c.ids[0])
			}
		}
	}
}

func TestRaftOverRPC(t *testing.T) {
	c := newRPCCluster(t, 3)
	ctx := ctxTimeout(t, 30*time.Second)
	waitFor(t, 10*time.Second, "a leader", func() bool { return c.leader() != consensus.None })
	for i := range 30 {
		c.propose(ctx, fmt.Sprint("a", i))
	}
	// Applied counts include no commands but the 30; noop entries are not applied.
	c.converged(30)

	// Restart a follower: it misses proposals while down and catches up.
	lead := c.leader()
	var f consensus.NodeID
	for _, id := range c.ids {
		if id != lead {
			f = id
			break
		}
	}
	c.stop(f)
	for i := range 30 {
		c.propose(ctx, fmt.Sprint("b", i))
	}
	c.start(f)
	for i := range 10 {
		c.propose(ctx, fmt.Sprint("c", i))
	}
	c.converged(70)

	// Restart the leader: a new one is elected, and the old one rejoins.
	lead = c.leader()
	c.stop(lead)
	for i := range 10 {
		c.propose(ctx, fmt.Sprint("d", i))
	}
	c.start(lead)
	c.converged(80)
	for _, id := range c.ids {
		st := c.nodes[id].tr.Stats()
		t.Logf("node %d transport: %+v", id, st)
	}
}
