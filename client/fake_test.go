package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// This file is the test's stand-in for server/: a "cluster" of rpc.Servers
// on loopback sharing one tiny in-memory state (sessions, locks with FIFO
// waiters, keys with revisions and watch history, exactly-once records),
// with knobs to fail, delay, hang and drop connections.

const testCluster = "client-test"

func testLogger(name string) hclog.Logger {
	lvl := os.Getenv("LOCKD_CLIENT_LOG")
	if lvl == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(lvl), Output: os.Stderr})
}

// writeRecord is one write as a node received it.
type writeRecord struct {
	node     string
	method   uint16
	cid, seq uint64
	applied  bool // false: answered from the exactly-once record (or refused)
}

type dedupRecord struct {
	seq  uint64
	resp any
	err  error
}

type fakeLock struct {
	holders map[session.ID]*api.Grant
	waiters []*api.Waiter
}

// fakeCluster is the shared state.
type fakeCluster struct {
	t *testing.T

	mu        sync.Mutex
	index     uint64 // ids, tokens and revisions come from here
	sessions  map[session.ID]*api.SessionInfo
	locks     map[string]*fakeLock
	kv        map[string]api.KeyValue
	revision  int64
	history   []api.Event
	compacted int64 // revisions ≤ this are gone from history
	dedup     map[uint64]dedupRecord
	writes    []writeRecord
	changed   chan struct{} // closed and replaced on every change
	// replayOverlap makes watch streams start this many revisions early
	// (a server that repeats events the client already has).
	replayOverlap int64
	// applyDelay, if set, delays a write before it is applied (keyed by
	// its sequence number), so writes arrive out of order.
	applyDelay func(seq uint64) time.Duration

	nodes []*fakeNode
}

// fakeNode is one endpoint.
type fakeNode struct {
	fc   *fakeCluster
	name string
	addr string
	srv  *rpc.Server

	mu sync.Mutex // protects the knobs
	// fail makes every call fail with this error.
	fail error
	// failNext makes the next n calls of a method fail with err.
	failNext map[uint16]*failN
	// keepaliveErr makes keepalives fail with this error.
	keepaliveErr error
	// hook runs at the start of every call (before any effect); a
	// non-nil error is the answer.
	hook func(ctx context.Context, method uint16) error
	// afterApply runs after a write applied, before it is answered.
	afterApply func(ctx context.Context, method uint16)
	// id and leader, when id is set, are what status answers: this node's
	// id and the leader it knows (else every node answers as the leader,
	// id 1).
	id, leader uint64

	calls      atomic.Int64
	keepalives atomic.Int64
}

type failN struct {
	n   int
	err error
}

func newFakeCluster(t *testing.T, nodes int) *fakeCluster {
	fc := &fakeCluster{
		t: t, sessions: map[session.ID]*api.SessionInfo{}, locks: map[string]*fakeLock{},
		kv: map[string]api.KeyValue{}, dedup: map[uint64]dedupRecord{}, changed: make(chan struct{}),
	}
	for i := range nodes {
		fc.nodes = append(fc.nodes, fc.startNode(fmt.Sprintf("n%d", i+1)))
	}
	return fc
}

func (fc *fakeCluster) addrs() []string {
	var out []string
	for _, n := range fc.nodes {
		out = append(out, n.addr)
	}
	return out
}

func (fc *fakeCluster) startNode(name string) *fakeNode {
	t := fc.t
	table, err := errorTable()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpc.NewServer(rpc.ServerConfig{ClusterID: testCluster, Name: name, Errors: table, Logger: testLogger("server-" + name)})
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{fc: fc, name: name, srv: srv, failNext: map[uint16]*failN{}}
	n.register(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, rpc.ErrClosed) {
			t.Errorf("node %s: Serve: %v", name, err)
		}
	})
	return n
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func (n *fakeNode) set(f func(n *fakeNode)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(n)
}

// enter runs the knobs at the start of a call.
func (n *fakeNode) enter(ctx context.Context, method uint16) error {
	n.calls.Add(1)
	n.mu.Lock()
	fail, hook := n.fail, n.hook
	var next error
	if f := n.failNext[method]; f != nil && f.n > 0 {
		f.n--
		next = f.err
	}
	n.mu.Unlock()
	if fail != nil {
		return fail
	}
	if next != nil {
		return next
	}
	if hook != nil {
		return hook(ctx, method)
	}
	return nil
}

func (n *fakeNode) applied(ctx context.Context, method uint16) {
	n.mu.Lock()
	f := n.afterApply
	n.mu.Unlock()
	if f != nil {
		f(ctx, method)
	}
}

// changedLocked wakes every waiter and watcher.
func (fc *fakeCluster) changedLocked() {
	close(fc.changed)
	fc.changed = make(chan struct{})
}

// write runs apply exactly once per (cid, seq), like the fsm: the last
// result per client is remembered; an older seq is refused.
func (fc *fakeCluster) write(ctx context.Context, n *fakeNode, method uint16, h api.WriteHeader, apply func() (any, error)) (any, error) {
	if fc.applyDelay != nil {
		// A simulated propagation delay (so writes reorder), not a wait
		// for a condition.
		t := time.NewTimer(fc.applyDelay(h.Seq))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	rec := writeRecord{node: n.name, method: method, cid: h.ClientID, seq: h.Seq}
	if h.ClientID != 0 && h.Seq != 0 {
		if d, ok := fc.dedup[h.ClientID]; ok {
			switch {
			case h.Seq == d.seq:
				fc.writes = append(fc.writes, rec)
				return d.resp, d.err
			case h.Seq < d.seq:
				fc.writes = append(fc.writes, rec)
				return nil, api.Errorf(api.CodeStaleSequence, "request %d of client %x is older than its last request %d", h.Seq, h.ClientID, d.seq)
			}
		}
	}
	rec.applied = true
	fc.writes = append(fc.writes, rec)
	resp, err := apply()
	if h.ClientID != 0 && h.Seq != 0 {
		fc.dedup[h.ClientID] = dedupRecord{seq: h.Seq, resp: resp, err: err}
	}
	fc.changedLocked()
	return resp, err
}

func (fc *fakeCluster) writesOf(method uint16) []writeRecord {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	var out []writeRecord
	for _, w := range fc.writes {
		if w.method == method {
			out = append(out, w)
		}
	}
	return out
}

func (fc *fakeCluster) next() uint64 {
	fc.index++
	return fc.index
}

// connTracker is a Config.Dial that remembers connections per address, so
// a test can cut them.
type connTracker struct {
	mu    sync.Mutex
	conns map[string][]net.Conn
	dials map[string]int
}

func newConnTracker() *connTracker {
	return &connTracker{conns: map[string][]net.Conn{}, dials: map[string]int{}}
}

func (ct *connTracker) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.dials[addr]++
	if err == nil {
		ct.conns[addr] = append(ct.conns[addr], nc)
	}
	return nc, err
}

// cut closes every connection made to addr.
func (ct *connTracker) cut(addr string) int {
	ct.mu.Lock()
	conns := ct.conns[addr]
	ct.conns[addr] = nil
	ct.mu.Unlock()
	for _, nc := range conns {
		nc.Close()
	}
	return len(conns)
}

func (ct *connTracker) dialsTo(addr string) int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.dials[addr]
}

// newTestClient returns a client of the given endpoints, closed when the
// test ends.
func newTestClient(t *testing.T, endpoints []string, mod func(*Config)) (*Client, *connTracker) {
	t.Helper()
	ct := newConnTracker()
	cfg := Config{
		Endpoints: endpoints, ClusterID: testCluster, Name: t.Name(),
		DialTimeout: time.Second, RequestTimeout: 2 * time.Second,
		BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Seed: 1, Dial: ct.dial, Logger: testLogger("client"),
		// The tests count calls per node; leader routing (route_test.go)
		// would add status calls and move leader-bound ones.
		NoLeaderRouting: true,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, ct
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		pollPause()
	}
}

// pollPause spaces the polls of waitFor.
func pollPause() {
	t := time.NewTimer(time.Millisecond)
	<-t.C
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
