package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
)

// methodCounter counts the calls a fake node receives per method; with
// noBatch the node answers the batch keepalive as an unknown method, the
// way a server from before it does.
type methodCounter struct {
	mu      sync.Mutex
	calls   map[uint16]int
	noBatch bool
}

func countMethods(n *fakeNode, noBatch bool) *methodCounter {
	mc := &methodCounter{calls: map[uint16]int{}, noBatch: noBatch}
	n.set(func(n *fakeNode) {
		n.hook = func(_ context.Context, method uint16) error {
			mc.mu.Lock()
			defer mc.mu.Unlock()
			mc.calls[method]++
			if mc.noBatch && method == api.MethodSessionKeepaliveBatch {
				return fmt.Errorf("%w: method %d is not served here", rpc.ErrUnknownMethod, method)
			}
			return nil
		}
	})
	return mc
}

func (mc *methodCounter) count(method uint16) int {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return mc.calls[method]
}

// keeperRunning reports whether a keeper goroutine is alive in the process.
func keeperRunning() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Contains(string(buf), "(*keeper).run")
}

func lostSessions(ss []*Session) []error {
	var errs []error
	for _, s := range ss {
		if err := s.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// 200 sessions of one client are renewed together: over two TTLs (six
// TTL/3 periods) the client makes a handful of keepalive calls instead of
// one per session and period, and no session is lost.
func TestKeeperRenewsManySessionsWithFewCalls(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	mc := countMethods(fc.nodes[0], false)
	const n, ttl = 200, 1500 * time.Millisecond
	ss := newSessionsTTL(t, c, n, ttl)
	start := time.Now()
	waitFor(t, 10*time.Second, "two TTLs", func() bool { return time.Since(start) > 2*ttl })
	if errs := lostSessions(ss); len(errs) > 0 {
		t.Fatalf("%d of %d sessions lost; first: %v", len(errs), n, errs[0])
	}
	batches, singles := mc.count(api.MethodSessionKeepaliveBatch), mc.count(api.MethodSessionKeepalive)
	periods := int(2 * ttl / (ttl / 3))
	t.Logf("%d sessions over %v: %d batch and %d single keepalive calls (one call per session would be %d)",
		n, time.Since(start).Round(time.Millisecond), batches, singles, n*periods)
	if singles != 0 {
		t.Errorf("%d single keepalives against a server with the batch method", singles)
	}
	// About one batch per TTL/3; a loaded machine may split a round or
	// retry a few, but nowhere near one call per session.
	if batches < periods-2 || batches > 4*periods {
		t.Errorf("%d batch calls in %d periods of TTL/3; want about one per period", batches, periods)
	}
	// Every session was renewed recently, not just kept by its first TTL.
	for _, s := range ss {
		if left := time.Until(s.born.Add(time.Duration(s.deadline.Load()))); left < ttl/3 {
			t.Fatalf("session %s: deadline in %v; its keepalives are not getting through", s.ID(), left)
		}
	}
}

// A session the server no longer knows is lost, with the server's
// message, and the others in the same batches stay live.
func TestKeeperLosesOnlyTheSessionTheServerForgot(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ss := newSessionsTTL(t, c, 20, liveTTL)
	victim := ss[7]
	fc.expire(victim.ID())
	select {
	case <-victim.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the forgotten session's Done was not closed")
	}
	if err := victim.Err(); !errors.Is(err, ErrSessionLost) || !errors.Is(err, api.ErrSessionNotFound) ||
		!strings.Contains(err.Error(), "expired or destroyed") {
		t.Fatalf("forgotten session: Err %v; want ErrSessionLost wrapping the server's ErrSessionNotFound", err)
	}
	start, before := time.Now(), keepalives(fc)
	waitFor(t, 10*time.Second, "two TTLs of keepalives", func() bool {
		return time.Since(start) > 2*liveTTL && keepalives(fc) >= before+4
	})
	for _, s := range ss {
		if s != victim && s.Err() != nil {
			t.Fatalf("session %s lost with the forgotten one: %v", s.ID(), s.Err())
		}
	}
}

// A failed batch is retried quickly on the next endpoint for every session
// in it.
func TestKeeperMovesEverySessionToAnotherNode(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ss := newSessionsTTL(t, c, 30, liveTTL)
	fc.nodes[0].set(func(n *fakeNode) { n.keepaliveErr = api.Errorf(api.CodeUnavailable, "no leader") })
	start := time.Now()
	waitFor(t, 10*time.Second, "keepalives on the second node for 2 TTLs", func() bool {
		return time.Since(start) > 2*liveTTL && fc.nodes[1].keepalives.Load() >= 3
	})
	if errs := lostSessions(ss); len(errs) > 0 {
		t.Fatalf("%d sessions lost although a node kept answering; first: %v", len(errs), errs[0])
	}
}

// Against a server without the batch method the client sends single
// keepalives (after one batch attempt) and keeps every session.
func TestKeeperFallsBackToSingleKeepalives(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	mc := countMethods(fc.nodes[0], true)
	ss := newSessionsTTL(t, c, 5, liveTTL)
	start := time.Now()
	waitFor(t, 10*time.Second, "two TTLs of single keepalives", func() bool {
		return time.Since(start) > 2*liveTTL && mc.count(api.MethodSessionKeepalive) >= 2*len(ss)
	})
	if errs := lostSessions(ss); len(errs) > 0 {
		t.Fatalf("%d sessions lost against a server without the batch method; first: %v", len(errs), errs[0])
	}
	if b := mc.count(api.MethodSessionKeepaliveBatch); b != 1 {
		t.Errorf("%d batch attempts; want 1 (then single keepalives until keeperBatchRetry)", b)
	}
}

// More sessions than one batch may carry go in several calls, none over
// the limit (the fake node refuses those, which would lose sessions).
func TestKeeperSplitsBatchesAtTheLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: creates 1,100 sessions")
	}
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	mc := countMethods(fc.nodes[0], false)
	n := api.MaxKeepaliveBatch + 76
	ss := newSessionsTTL(t, c, n, 3*time.Second)
	start := time.Now()
	waitFor(t, 15*time.Second, "one TTL", func() bool {
		return time.Since(start) > 3*time.Second && mc.count(api.MethodSessionKeepaliveBatch) >= 4
	})
	if errs := lostSessions(ss); len(errs) > 0 {
		t.Fatalf("%d of %d sessions lost; first: %v", len(errs), n, errs[0])
	}
}

// The keeper's goroutine ends when the client's last session ends and is
// started again by the next one; Client.Close ends it too.
func TestKeeperGoroutineEndsWithTheSessions(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	waitFor(t, 5*time.Second, "no keeper of earlier tests", func() bool { return !keeperRunning() })
	ss := newSessionsTTL(t, c, 3, liveTTL)
	if !keeperRunning() {
		t.Fatal("no keeper goroutine while sessions live")
	}
	ss[0].Orphan()
	ss[1].Orphan()
	if err := ss[2].Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the keeper to end after the last session", func() bool { return !keeperRunning() })
	s := newSessionsTTL(t, c, 1, liveTTL)[0]
	start := time.Now()
	waitFor(t, 5*time.Second, "keepalives of a session started after the keeper ended", func() bool {
		return time.Since(start) > 2*liveTTL
	})
	if s.Err() != nil {
		t.Fatalf("session started after the keeper ended was lost: %v", s.Err())
	}
	c.Close()
	if keeperRunning() {
		t.Fatal("keeper goroutine alive after Client.Close")
	}
	if !errors.Is(s.Err(), ErrClosed) {
		t.Fatalf("session after Client.Close: %v", s.Err())
	}
}
