package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
	"github.com/lockd/lockd/store"
)

// These tests run consensus.Node on real Stores (the default backend, the
// WAL): the driver's contract with its storage, end to end.

const (
	nodeTick    = 10 * time.Millisecond
	nodeTimeout = 15 * time.Second
)

// durableStore is a Store that remembers which entries it has made
// durable: the term of every index whose Save or StoreEntries returned.
type durableStore struct {
	*store.Store
	mu    sync.Mutex // protects terms
	terms map[consensus.Index]consensus.Term
}

func openDurable(t *testing.T, dir string) *durableStore {
	t.Helper()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &durableStore{Store: s, terms: map[consensus.Index]consensus.Term{}}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if last > 0 {
		ents, err := s.Entries(first, last+1)
		if err != nil {
			t.Fatal(err)
		}
		d.record(ents)
	}
	return d
}

func (d *durableStore) record(ents []consensus.Entry) {
	if len(ents) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.terms {
		if i >= ents[0].Index {
			delete(d.terms, i)
		}
	}
	for _, e := range ents {
		d.terms[e.Index] = e.Term
	}
}

func (d *durableStore) Save(hs *consensus.HardState, ents []consensus.Entry) error {
	if err := d.Store.Save(hs, ents); err != nil {
		return err
	}
	d.record(ents)
	return nil
}

func (d *durableStore) StoreEntries(ents []consensus.Entry) error {
	if err := d.Store.StoreEntries(ents); err != nil {
		return err
	}
	d.record(ents)
	return nil
}

func (d *durableStore) holds(e consensus.Entry) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.terms[e.Index]
	return ok && t == e.Term
}

// recordingSM records what it applies and checks, at each Apply, that a
// majority of the cluster's stores had already made the entry durable:
// an entry must never count toward commit before its batch is durable.
type recordingSM struct {
	stores []*durableStore // the whole cluster's, fixed before any node starts

	mu         sync.Mutex // protects applied and violations
	applied    []string
	violations []string
}

func (m *recordingSM) Apply(e consensus.Entry) any {
	n := 0
	for _, s := range m.stores {
		if s.holds(e) {
			n++
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if n < len(m.stores)/2+1 {
		m.violations = append(m.violations, fmt.Sprintf("entry %d (term %d) applied when %d of %d stores held it", e.Index, e.Term, n, len(m.stores)))
	}
	m.applied = append(m.applied, string(e.Data))
	return e.Index
}

func (m *recordingSM) Snapshot(io.Writer) error { return errors.New("recordingSM: no snapshots") }
func (m *recordingSM) Restore(io.Reader) error  { return errors.New("recordingSM: no snapshots") }

func (m *recordingSM) state() (applied, violations []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.applied), slices.Clone(m.violations)
}

// boltCluster runs nodes on BoltStores in their own data dirs.
type boltCluster struct {
	t      *testing.T
	ids    []consensus.NodeID
	dirs   map[consensus.NodeID]string
	net    *inmem.Network
	stores map[consensus.NodeID]*durableStore
	sms    map[consensus.NodeID]*recordingSM
	nodes  map[consensus.NodeID]*consensus.Node
}

func newBoltCluster(t *testing.T, size int) *boltCluster {
	c := &boltCluster{t: t, dirs: map[consensus.NodeID]string{}}
	for i := 1; i <= size; i++ {
		id := consensus.NodeID(i)
		c.ids = append(c.ids, id)
		c.dirs[id] = t.TempDir()
	}
	c.start()
	t.Cleanup(func() { c.stop() })
	return c
}

// start opens every store and starts every node, with fresh state
// machines that replay the log.
func (c *boltCluster) start() {
	c.t.Helper()
	c.net = inmem.NewNetwork()
	c.stores = map[consensus.NodeID]*durableStore{}
	c.sms = map[consensus.NodeID]*recordingSM{}
	c.nodes = map[consensus.NodeID]*consensus.Node{}
	var all []*durableStore
	for _, id := range c.ids {
		c.stores[id] = openDurable(c.t, c.dirs[id])
		all = append(all, c.stores[id])
	}
	for _, id := range c.ids {
		c.sms[id] = &recordingSM{stores: all}
		n, err := consensus.StartNode(consensus.NodeConfig{
			Raft:         consensus.Config{ID: id, Voters: c.ids},
			LogStore:     c.stores[id],
			StableStore:  c.stores[id],
			Transport:    c.net.Transport(id),
			StateMachine: c.sms[id],
			TickInterval: nodeTick,
		})
		if err != nil {
			c.t.Fatalf("starting node %d: %v", id, err)
		}
		c.nodes[id] = n
		c.net.Register(id, n)
	}
}

// stop stops every node and closes every store; it returns each node's
// last status.
func (c *boltCluster) stop() map[consensus.NodeID]consensus.Status {
	if c.nodes == nil {
		return nil
	}
	st := map[consensus.NodeID]consensus.Status{}
	for id, n := range c.nodes {
		c.net.Unregister(id)
		n.Stop()
		st[id] = n.Status()
	}
	c.net.Close()
	for _, s := range c.stores {
		if err := s.Close(); err != nil {
			c.t.Errorf("closing store: %v", err)
		}
	}
	c.nodes = nil
	return st
}

func (c *boltCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(nodeTimeout)
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s", nodeTimeout, what)
		}
		<-poll.C
	}
}

func (c *boltCluster) leader() consensus.NodeID {
	var lead consensus.NodeID
	c.waitFor("a leader", func() bool {
		for id, n := range c.nodes {
			if n.Status().Role == consensus.Leader {
				lead = id
				return true
			}
		}
		return false
	})
	return lead
}

// propose proposes data on the leader, retrying through leader changes,
// and returns once it is applied there (acknowledged).
func (c *boltCluster) propose(data string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	for {
		_, err := c.nodes[c.leader()].Propose(ctx, []byte(data))
		if err == nil {
			return
		}
		if !errors.Is(err, consensus.ErrNotLeader) && !errors.Is(err, consensus.ErrProposalLost) {
			c.t.Fatalf("proposing %q: %v", data, err)
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("proposing %q: %v", data, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// checkApplied waits until every node applied exactly want, in order, and
// checks that no entry was applied before a majority held it durably.
func (c *boltCluster) checkApplied(want []string) {
	c.t.Helper()
	for _, id := range c.ids {
		sm := c.sms[id]
		c.waitFor(fmt.Sprintf("node %d to apply %d commands", id, len(want)), func() bool {
			got, _ := sm.state()
			return len(got) >= len(want)
		})
		got, violations := sm.state()
		if !slices.Equal(got, want) {
			c.t.Fatalf("node %d applied %q, want %q", id, got, want)
		}
		if len(violations) > 0 {
			c.t.Fatalf("node %d: %v", id, violations)
		}
	}
}

// checkDurable checks, with the nodes stopped and stores reopened, that
// each store holds the term and vote its node last reported and every
// acknowledged command in its log.
func (c *boltCluster) checkDurable(status map[consensus.NodeID]consensus.Status, acked []string) {
	c.t.Helper()
	for _, id := range c.ids {
		s, err := store.Open(c.dirs[id], store.Options{})
		if err != nil {
			c.t.Fatal(err)
		}
		hs, err := s.HardState()
		if err != nil {
			c.t.Fatal(err)
		}
		if st := status[id]; hs.Term != st.Term || hs.Vote != st.Vote {
			c.t.Fatalf("node %d: stored term %d vote %d, but it ran with term %d vote %d", id, hs.Term, hs.Vote, st.Term, st.Vote)
		}
		last, _ := s.LastIndex()
		ents, err := s.Entries(1, last+1)
		s.Close()
		if err != nil {
			c.t.Fatal(err)
		}
		var logged []string
		for _, e := range ents {
			if e.Type == consensus.EntryNormal {
				logged = append(logged, string(e.Data))
			}
		}
		if !slices.Equal(logged[:min(len(logged), len(acked))], acked) {
			c.t.Fatalf("node %d's log holds %q, want the acknowledged %q first", id, logged, acked)
		}
	}
}

func testRestartOnBoltStores(t *testing.T, size int) {
	c := newBoltCluster(t, size)
	var acked []string
	var wg sync.WaitGroup
	var mu sync.Mutex // protects acked while proposals run concurrently
	for round := 0; round < 3; round++ {
		// Concurrent proposals share log writes (group commit).
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := fmt.Sprintf("r%d-%d", round, i)
				ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
				defer cancel()
				poll := time.NewTicker(time.Millisecond)
				defer poll.Stop()
				for {
					for _, n := range c.nodes {
						if n.Status().Role != consensus.Leader {
							continue
						}
						if _, err := n.Propose(ctx, []byte(data)); err == nil {
							mu.Lock()
							acked = append(acked, data)
							mu.Unlock()
							return
						}
					}
					select {
					case <-ctx.Done():
						return
					case <-poll.C:
					}
				}
			}()
		}
		wg.Wait()
		c.propose(fmt.Sprintf("barrier-%d", round))
		acked = append(acked, fmt.Sprintf("barrier-%d", round))
	}
	if len(acked) != 33 {
		t.Fatalf("%d of 33 proposals acknowledged", len(acked))
	}
	// The order is the leader's log order, which the state machines saw.
	want, _ := c.sms[c.leader()].state()
	c.checkApplied(want)

	status := c.stop()
	c.checkDurable(status, want)

	// Restart from the stores alone: everything acknowledged is applied
	// again, in the same order, and the cluster goes on.
	c.start()
	c.checkApplied(want)
	c.propose("after-restart")
	c.checkApplied(append(want, "after-restart"))
	for id, n := range c.nodes {
		if st := n.Status(); st.Term < status[id].Term {
			t.Fatalf("node %d restarted in term %d, below the term %d it had reached", id, st.Term, status[id].Term)
		}
	}
}

func TestNodeRestartOnBoltStoreSingleNode(t *testing.T) { testRestartOnBoltStores(t, 1) }

func TestNodeRestartOnBoltStoresThreeNodes(t *testing.T) { testRestartOnBoltStores(t, 3) }
