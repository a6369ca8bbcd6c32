package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
)

func TestConfigValidateNamesTheValues(t *testing.T) {
	cfg := Config{Endpoints: []string{"127.0.0.1:1", "nope", "127.0.0.1:1"}, RequestTimeout: -time.Second,
		BackoffMin: time.Second, BackoffMax: time.Millisecond}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{`endpoint 1 "nope" is not host:port`, `endpoint "127.0.0.1:1" is listed twice`,
		"request timeout -1s must be positive", "backoff max 1ms must be ≥ backoff min 1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "no endpoints") {
		t.Errorf("New without endpoints: %v", err)
	}
	ok := Config{Endpoints: []string{"127.0.0.1:7400"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.DialTimeout != DefaultDialTimeout || ok.RequestTimeout != DefaultRequestTimeout || ok.Limits == nil || ok.Logger == nil ||
		ok.ConnsPerEndpoint != DefaultConnsPerEndpoint {
		t.Errorf("defaults not filled: %+v", ok)
	}
	for _, n := range []int{-1, 65} {
		bad := Config{Endpoints: []string{"127.0.0.1:7400"}, ConnsPerEndpoint: n}
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("connections per endpoint %d must be between 1 and 64", n)) {
			t.Errorf("ConnsPerEndpoint %d: %v", n, err)
		}
	}
}

// Concurrent calls share one connection per endpoint unless the Client is
// told to keep more: answers ready together then share a write and a read.
func TestConcurrentCallsShareOneConnectionPerEndpoint(t *testing.T) {
	fc := newFakeCluster(t, 1)
	for _, tc := range []struct{ conns, want int }{{0, 1}, {3, 3}} {
		c, ct := newTestClient(t, []string{fc.nodes[0].addr}, func(cfg *Config) { cfg.ConnsPerEndpoint = tc.conns })
		ctx := testCtx(t)
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.KV().Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := ct.dialsTo(fc.nodes[0].addr); got != tc.want {
			t.Errorf("ConnsPerEndpoint %d: 32 concurrent puts opened %d connections, want %d", tc.conns, got, tc.want)
		}
	}
}

func TestEndpointRotationPastADeadEndpoint(t *testing.T) {
	fc := newFakeCluster(t, 1)
	dead := deadAddr(t)
	c, ct := newTestClient(t, []string{dead, fc.nodes[0].addr}, nil)
	ctx := testCtx(t)
	if c.Endpoint() != dead {
		t.Fatalf("first endpoint %s, want %s", c.Endpoint(), dead)
	}
	resp, err := c.KV().Put(ctx, "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Revision == 0 {
		t.Errorf("put answered revision 0")
	}
	if c.Endpoint() != fc.nodes[0].addr {
		t.Errorf("calls go to %s after the dead endpoint failed, want %s", c.Endpoint(), fc.nodes[0].addr)
	}
	if ct.dialsTo(dead) == 0 {
		t.Errorf("the dead endpoint was never tried")
	}
	// Later calls stay on the live endpoint.
	before := ct.dialsTo(dead)
	for range 5 {
		if _, err := c.KV().Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	if ct.dialsTo(dead) != before {
		t.Errorf("calls went back to the dead endpoint")
	}
}

// A write whose answer is lost (the connection dies after it applied) is
// retried on another node with the same (ClientID, Seq), and the server
// answers from its exactly-once record instead of applying again.
func TestRetryReusesClientIDAndSeq(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, ct := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	var once atomic.Bool
	fc.nodes[0].set(func(n *fakeNode) {
		n.afterApply = func(ctx context.Context, method uint16) {
			if method == api.MethodKVPut && once.CompareAndSwap(false, true) {
				ct.cut(n.addr) // the answer never leaves
			}
		}
	})
	resp, err := c.KV().Put(ctx, "k", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	ws := fc.writesOf(api.MethodKVPut)
	if len(ws) != 2 {
		t.Fatalf("server saw %d puts, want the original and one retry: %+v", len(ws), ws)
	}
	if ws[0].node == ws[1].node {
		t.Errorf("the retry went to the same node %s", ws[0].node)
	}
	if ws[0].cid != ws[1].cid || ws[0].seq != ws[1].seq || ws[0].cid == 0 || ws[0].seq == 0 {
		t.Errorf("retry carried (%x, %d), original (%x, %d): want the same non-zero pair", ws[1].cid, ws[1].seq, ws[0].cid, ws[0].seq)
	}
	if !ws[0].applied || ws[1].applied {
		t.Errorf("applied flags %v, %v: want the original applied and the retry answered from the record", ws[0].applied, ws[1].applied)
	}
	got, err := c.KV().Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got.KV == nil || got.KV.Version != 1 || got.KV.ModRevision != resp.Revision {
		t.Errorf("key after the retried put: %+v; want version 1 at revision %d", got.KV, resp.Revision)
	}
	// The next write is a new request: a new Seq.
	if _, err := c.KV().Put(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	ws = fc.writesOf(api.MethodKVPut)
	if last := ws[len(ws)-1]; !last.applied || last.cid == ws[0].cid && last.seq == ws[0].seq {
		t.Errorf("the next put reused (%x, %d) or was not applied", last.cid, last.seq)
	}
}

// The server remembers one result per client id and refuses older
// sequence numbers, so writes running concurrently must not share an id:
// with arrival order shuffled, none may be refused as stale.
func TestConcurrentWritesNeverRefusedAsStale(t *testing.T) {
	fc := newFakeCluster(t, 1)
	fc.applyDelay = func(seq uint64) time.Duration { return time.Duration(seq*7%5) * time.Millisecond }
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16*5)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				if _, err := c.KV().Put(ctx, fmt.Sprintf("k%d", g), []byte{byte(i)}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent put: %v", err)
	}
	// Per client id, the server saw strictly increasing sequence numbers.
	last := map[uint64]uint64{}
	for _, w := range fc.writesOf(api.MethodKVPut) {
		if w.seq <= last[w.cid] {
			t.Errorf("client id %x: seq %d arrived after %d", w.cid, w.seq, last[w.cid])
		}
		last[w.cid] = w.seq
	}
	if len(last) < 2 {
		t.Errorf("16 concurrent writers used %d client ids", len(last))
	}
}

func TestRetriesUntilTheContextEnds(t *testing.T) {
	fc := newFakeCluster(t, 2)
	for _, n := range fc.nodes {
		n.set(func(n *fakeNode) { n.fail = api.Errorf(api.CodeUnavailable, "no leader in term 7 after waiting 1s") })
	}
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.KV().Put(ctx, "k", []byte("v"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put against a leaderless cluster: %v; want the context's deadline", err)
	}
	if !strings.Contains(err.Error(), "no leader in term 7") {
		t.Errorf("error %q does not say what the last attempt met", err)
	}
	for _, n := range fc.nodes {
		if n.calls.Load() < 2 {
			t.Errorf("node %s was tried %d times", n.name, n.calls.Load())
		}
	}
	// All attempts were one logical write: one (ClientID, Seq).
	ws := fc.writesOf(api.MethodKVPut)
	for _, w := range ws {
		if w.cid != ws[0].cid || w.seq != ws[0].seq {
			t.Errorf("attempt carried (%x, %d), first (%x, %d)", w.cid, w.seq, ws[0].cid, ws[0].seq)
		}
	}
}

func TestAnswersAreNotRetried(t *testing.T) {
	fc := newFakeCluster(t, 2)
	fc.nodes[0].set(func(n *fakeNode) {
		n.failNext[api.MethodKVPut] = &failN{n: 1, err: api.Errorf(api.CodeTooLarge, "value of 9 bytes exceeds the 8-byte limit")}
	})
	c, _ := newTestClient(t, fc.addrs(), nil)
	_, err := c.KV().Put(testCtx(t), "k", []byte("123456789"))
	var ae *api.Error
	if !errors.Is(err, api.ErrTooLarge) || !errors.As(err, &ae) || ae.Message != "value of 9 bytes exceeds the 8-byte limit" {
		t.Fatalf("put: %v; want api.ErrTooLarge with the server's message", err)
	}
	if fc.nodes[0].calls.Load() != 1 || fc.nodes[1].calls.Load() != 0 {
		t.Errorf("calls: %d and %d; an answer must not be retried", fc.nodes[0].calls.Load(), fc.nodes[1].calls.Load())
	}
	// Limits are checked before sending, with the server's wording.
	_, err = c.KV().Put(testCtx(t), "", nil)
	if !errors.Is(err, api.ErrInvalid) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := c.KV().Get(testCtx(t), "k", WithLimit(3)); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "WithLimit") {
		t.Errorf("Get with WithLimit: %v; want a refusal naming the option", err)
	}
}

// A node that hangs without closing its connection costs one
// RequestTimeout, then the call moves on.
func TestHungNodeIsLeftAfterRequestTimeout(t *testing.T) {
	fc := newFakeCluster(t, 2)
	fc.nodes[0].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			<-ctx.Done()
			return ctx.Err()
		}
	})
	c, _ := newTestClient(t, fc.addrs(), func(cfg *Config) { cfg.RequestTimeout = 100 * time.Millisecond })
	start := time.Now()
	if _, err := c.KV().Get(testCtx(t), "k"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("get took %v past a hung node", d)
	}
	if c.Endpoint() != fc.nodes[1].addr {
		t.Errorf("calls still go to the hung node")
	}
}

func TestStatusAllAsksEveryEndpoint(t *testing.T) {
	fc := newFakeCluster(t, 2)
	dead := deadAddr(t)
	c, _ := newTestClient(t, append(fc.addrs(), dead), nil)
	ctx := testCtx(t)
	st, err := c.Status(ctx)
	if err != nil || st.Node.Name != "n1" || len(st.Members) != 2 {
		t.Fatalf("Status: %+v, %v", st, err)
	}
	all := c.StatusAll(ctx)
	if len(all) != 3 {
		t.Fatalf("StatusAll: %d answers", len(all))
	}
	for i, want := range []string{"n1", "n2"} {
		if all[i].Err != nil || all[i].Status.Node.Name != want || all[i].Endpoint != fc.nodes[i].addr {
			t.Errorf("endpoint %d: %+v", i, all[i])
		}
	}
	if all[2].Err == nil || !errors.Is(all[2].Err, rpc.ErrUnavailable) || all[2].Endpoint != dead {
		t.Errorf("dead endpoint: %+v", all[2])
	}
}

func TestCloseFailsCallsAndIsIdempotent(t *testing.T) {
	fc := newFakeCluster(t, 1)
	fc.nodes[0].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			<-ctx.Done()
			return ctx.Err()
		}
	})
	c, _ := newTestClient(t, fc.addrs(), func(cfg *Config) { cfg.RequestTimeout = time.Minute })
	errc := make(chan error, 1)
	go func() {
		_, err := c.KV().Get(context.Background(), "k")
		errc <- err
	}()
	waitFor(t, 5*time.Second, "the call to reach the server", func() bool { return fc.nodes[0].calls.Load() > 0 })
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("call in flight at Close: %v; want ErrClosed", err)
	}
	c.Close()
	if _, err := c.KV().Get(context.Background(), "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("call after Close: %v", err)
	}
}

// Calls have no context of their own: a write waiting for a lane and a
// call waiting out a backoff must still end at Close, with ErrClosed.
func TestCloseEndsCallsWaitingForALaneOrABackoff(t *testing.T) {
	fc := newFakeCluster(t, 1)
	fc.nodes[0].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			if method == api.MethodKVGet {
				return api.Errorf(api.CodeUnavailable, "no leader (test)")
			}
			<-ctx.Done()
			return ctx.Err()
		}
	})
	c, _ := newTestClient(t, fc.addrs(), func(cfg *Config) {
		cfg.RequestTimeout, cfg.MaxConcurrentWrites = time.Minute, 1
		cfg.BackoffMin, cfg.BackoffMax = time.Minute, time.Minute
	})
	errc := make(chan error, 3)
	for range 2 { // the first holds the only lane, the second waits for it
		go func() {
			_, err := c.KV().Put(context.Background(), "k", []byte("v"))
			errc <- err
		}()
	}
	go func() { // fails at once, then waits out a minute's backoff
		_, err := c.KV().Get(context.Background(), "k")
		errc <- err
	}()
	waitFor(t, 5*time.Second, "the calls to reach the server", func() bool { return fc.nodes[0].calls.Load() >= 2 })
	waitFor(t, 5*time.Second, "the second put to wait for a lane", func() bool { return c.lanes.waiting.Load() == 1 })
	start := time.Now()
	c.Close()
	for range 3 {
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("call at Close: %v; want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a call was still running %v after Close", time.Since(start))
		}
	}
}

func TestKVOperations(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	kv := c.KV()
	for _, k := range []string{"cfg/a", "cfg/b", "cfg/c", "other"} {
		if _, err := kv.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	page, err := kv.List(ctx, "cfg/", WithLimit(2))
	if err != nil || len(page.KVs) != 2 || !page.More {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	page, err = kv.List(ctx, "cfg/", WithStart("cfg/c"), WithStale())
	if err != nil || len(page.KVs) != 1 || page.KVs[0].Key != "cfg/c" || page.More {
		t.Fatalf("second page: %+v, %v", page, err)
	}
	g, err := kv.Get(ctx, "cfg/a", WithStale())
	if err != nil || g.KV == nil || string(g.KV.Value) != "cfg/a" || !g.Read.Stale {
		t.Fatalf("stale get: %+v, %v", g, err)
	}
	// Compare-and-set on the mod revision.
	txn, err := kv.Txn(ctx, Txn{
		If:   []api.Compare{CompareModRevision("cfg/a", api.Equal, g.KV.ModRevision)},
		Then: []api.Op{OpPut("cfg/a", []byte("A"))},
		Else: []api.Op{OpGet("cfg/a")},
	})
	if err != nil || !txn.Succeeded {
		t.Fatalf("CAS: %+v, %v", txn, err)
	}
	txn, err = kv.Txn(ctx, Txn{
		If:   []api.Compare{CompareModRevision("cfg/a", api.Equal, g.KV.ModRevision)},
		Then: []api.Op{OpPut("cfg/a", []byte("lost"))},
		Else: []api.Op{OpGet("cfg/a")},
	})
	if err != nil || txn.Succeeded || string(txn.Ops[0].KVs[0].Value) != "A" {
		t.Fatalf("stale CAS: %+v, %v", txn, err)
	}
	d, err := kv.Delete(ctx, "cfg/", WithPrefix())
	if err != nil || d.Deleted != 3 {
		t.Fatalf("delete prefix: %+v, %v", d, err)
	}
	if g, err := kv.Get(ctx, "cfg/a"); err != nil || g.KV != nil {
		t.Fatalf("get after delete: %+v, %v", g, err)
	}
	big := Txn{}
	for range 200 {
		big.Then = append(big.Then, OpDelete("x"))
	}
	if _, err := kv.Txn(ctx, big); !errors.Is(err, api.ErrLimit) {
		t.Errorf("oversized txn: %v", err)
	}
}

// A write abandoned without an answer retires its lane: the next write
// runs under another client id, so a newer Seq on a lane always means the
// same call was sent again.
func TestAbandonedWriteRetiresItsLane(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	if _, err := c.KV().Put(testCtx(t), "k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	fc.nodes[0].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.KV().Put(ctx, "k", []byte("2")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put to a hung node: %v", err)
	}
	close(release)
	if _, err := c.KV().Put(testCtx(t), "k", []byte("3")); err != nil {
		t.Fatal(err)
	}
	ws := fc.writesOf(api.MethodKVPut)
	first, last := ws[0], ws[len(ws)-1]
	if first.cid == last.cid {
		t.Errorf("the write after an abandoned one reused client id %x", first.cid)
	}
	// An answered write keeps its lane.
	if _, err := c.KV().Put(testCtx(t), "k", []byte("4")); err != nil {
		t.Fatal(err)
	}
	ws = fc.writesOf(api.MethodKVPut)
	if next := ws[len(ws)-1]; next.cid != last.cid || next.seq != last.seq+1 {
		t.Errorf("answered write on (%x, %d), next on (%x, %d): want the same lane, next seq", last.cid, last.seq, next.cid, next.seq)
	}
}
