package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// TestKeeperSingleKeepalivesThatHangDoNotHoldExpiredSessionsOpen: against
// a server without the batch method the keeper sends single keepalives,
// keeperSingleConcurrency at a time. When they all hang until their
// timeout, a round of 320 sessions used to last 20 timeouts (10 s for a
// TTL of 1.5 s), and meanwhile no session's Done was closed although
// every deadline had passed long before: a holder waiting on Lost kept
// working on a lock the cluster had already expired. The round now stops
// starting calls after one timeout, so Done closes about when the TTL
// runs out.
func TestKeeperSingleKeepalivesThatHangDoNotHoldExpiredSessionsOpen(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the cluster's servers close
	fc.nodes[0].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			switch method {
			case api.MethodSessionKeepaliveBatch:
				return fmt.Errorf("%w: method %d is not served here", rpc.ErrUnknownMethod, method)
			case api.MethodSessionKeepalive:
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-release:
					return api.Errorf(api.CodeUnavailable, "test over")
				}
			}
			return nil
		}
	})
	const ttl = 1500 * time.Millisecond // keepalive timeout TTL/3
	ss := newSessionsTTL(t, c, 20*keeperSingleConcurrency, ttl)
	created := time.Now()
	// Every deadline is at most ttl after created; allow 3 s more for a
	// loaded machine (the old round ended about 9 s after them).
	waitFor(t, ttl+3*time.Second, "every session's Done after its TTL passed without a keepalive", func() bool {
		for _, s := range ss {
			if !closed(s.Done()) {
				return false
			}
		}
		return true
	})
	t.Logf("all %d sessions ended %v after the last was created", len(ss), time.Since(created).Round(time.Millisecond))
}

// TestKeeperClosesDoneAtTheDeadlineWhileABatchHangs: the keeper's
// goroutine waits for a round's call, which may take its whole timeout
// (TTL/3). A session whose keepalives kept failing and whose deadline
// passed while the last one hung used to keep Done open until that call
// gave up, up to TTL/3 after the cluster could expire it, with no
// lock-delay to cover a holder still working on its lock. The fake node
// fails keepalives at once until half a timeout before the deadline,
// then holds the next one until the client cancels it, and records
// whether Done was closed while the call still ran, at least a quarter
// timeout after the deadline.
func TestKeeperClosesDoneAtTheDeadlineWhileABatchHangs(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	const ttl = 3 * time.Second
	timeout := min(c.cfg.RequestTimeout, ttl/3) // the keeper's per-call timeout
	s := newSessionsTTL(t, c, 1, ttl)[0]
	deadline := func() time.Time { return s.born.Add(time.Duration(s.deadline.Load())) }
	doneAtCancel := make(chan bool, 1)
	fc.nodes[0].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			if method != api.MethodSessionKeepaliveBatch {
				return nil
			}
			if time.Until(deadline()) > timeout/2 {
				return api.Errorf(api.CodeUnavailable, "no leader (test)")
			}
			// Entered at most timeout/2 before the deadline, the call
			// lives until a timeout after it was sent (before it entered
			// here): look at Done up to a quarter timeout before that.
			look := time.NewTimer(timeout * 3 / 4)
			defer look.Stop()
			select {
			case <-s.Done():
			case <-look.C:
			case <-ctx.Done():
			}
			select {
			case doneAtCancel <- closed(s.Done()) && ctx.Err() == nil:
			default:
			}
			<-ctx.Done() // the client gives up on the call
			return ctx.Err()
		}
	})
	var done bool
	select {
	case done = <-doneAtCancel:
	case <-time.After(ttl + 10*time.Second):
		t.Fatal("no keepalive was held until the client gave up on it")
	}
	if !done {
		t.Fatalf("the session's deadline passed while a keepalive hung, and Done was still open (session err %v)", s.Err())
	}
	if err := s.Err(); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("session error %v; want ErrSessionExpired", err)
	}
}

// TestKeeperEndsASessionAddedDuringAHungRoundAtItsDeadline: the deadline
// watcher of a round sleeps until the earliest deadline it saw when the
// round began. A session created while the round hangs, with a TTL far
// shorter than the others, must still have its Done closed at its own
// deadline, not when the round gives up on its call.
func TestKeeperEndsASessionAddedDuringAHungRoundAtItsDeadline(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	timeout := c.cfg.RequestTimeout // the keeper's per-call timeout (TTL/3 for this TTL)
	long := newSessionsTTL(t, c, 1, 3*timeout)[0]
	entered := make(chan struct{}, 1)
	var short atomic.Pointer[Session]
	doneInFlight := make(chan bool, 1)
	fc.nodes[0].set(func(n *fakeNode) {
		n.hook = func(ctx context.Context, method uint16) error {
			if method != api.MethodSessionKeepaliveBatch {
				return nil
			}
			select {
			case entered <- struct{}{}:
			default:
				<-ctx.Done()
				return ctx.Err()
			}
			// The call lives for timeout after it was sent: look at the
			// short session's Done up to a quarter timeout before that.
			look := time.NewTimer(timeout * 3 / 4)
			defer look.Stop()
			for {
				s := short.Load()
				if s != nil && closed(s.Done()) {
					break
				}
				select {
				case <-look.C:
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
					continue
				}
				break
			}
			s := short.Load()
			doneInFlight <- s != nil && closed(s.Done()) && ctx.Err() == nil
			<-ctx.Done()
			return ctx.Err()
		}
	})
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("no keepalive of the long session was sent")
	}
	// Its deadline is timeout/4 away, well before the hung call ends.
	short.Store(newSessionsTTL(t, c, 1, timeout/4)[0])
	var ok bool
	select {
	case ok = <-doneInFlight:
	case <-time.After(2*timeout + 10*time.Second):
		t.Fatal("the hung keepalive never looked at the short session")
	}
	if !ok {
		t.Fatalf("the short session's deadline passed while the round hung, and its Done was still open (err %v)", short.Load().Err())
	}
	if long.Err() != nil {
		t.Fatalf("the long session ended: %v", long.Err())
	}
}

// startOldNode serves session create and the single keepalive (not the
// batch method, like a server from before it) on fc's state; hook sees
// each keepalive's session first, and a non-nil error is its answer.
func startOldNode(t *testing.T, fc *fakeCluster, hook func(ctx context.Context, id session.ID) error) string {
	table, err := errorTable()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpc.NewServer(rpc.ServerConfig{ClusterID: testCluster, Name: "old", Errors: table, Logger: testLogger("server-old")})
	if err != nil {
		t.Fatal(err)
	}
	if err := rpc.Handle(srv, rpc.Method(api.MethodSessionCreate), "session.create", func(ctx context.Context, req *api.SessionCreateRequest) (*api.SessionCreateResponse, error) {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		resp, err := fc.createSession(req)
		if err != nil {
			return nil, err
		}
		return resp.(*api.SessionCreateResponse), nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := rpc.Handle(srv, rpc.Method(api.MethodSessionKeepalive), "session.keepalive", func(ctx context.Context, req *api.SessionKeepaliveRequest) (*api.SessionKeepaliveResponse, error) {
		if err := hook(ctx, req.ID); err != nil {
			return nil, err
		}
		fc.mu.Lock()
		defer fc.mu.Unlock()
		info := fc.sessions[req.ID]
		if info == nil {
			return nil, api.Errorf(api.CodeSessionNotFound, "session %s not found", req.ID)
		}
		return &api.SessionKeepaliveResponse{TTL: info.TTL}, nil
	}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}

// TestKeeperKeepsASessionRenewedEarlyInAHungSinglesRound: with single
// keepalives, one session's call may succeed while another's hangs for
// the round's whole timeout. The success must count at once: the round's
// deadline watcher ends sessions whose deadline passes meanwhile, and
// would otherwise end the renewed one at its old deadline (a session
// wrongly reported lost). Both sessions fail at once until half a timeout
// before x's first deadline; then x's keepalive succeeds and y's hangs
// until the client gives up, which is half a timeout after that deadline
// at the earliest.
func TestKeeperKeepsASessionRenewedEarlyInAHungSinglesRound(t *testing.T) {
	const ttl = 3 * time.Second
	var x, y atomic.Pointer[Session]
	var xDeadline atomic.Int64 // Unix ns; set before the hook acts
	var timeout time.Duration  // set before the hook acts
	renewed := make(chan struct{})
	var once sync.Once
	fc := newFakeCluster(t, 0)
	addr := startOldNode(t, fc, func(ctx context.Context, id session.ID) error {
		xs, ys, d := x.Load(), y.Load(), xDeadline.Load()
		if xs == nil || ys == nil || d == 0 || time.Until(time.Unix(0, d)) > timeout/2 {
			return api.Errorf(api.CodeUnavailable, "no leader (test)")
		}
		if id == ys.ID() {
			<-ctx.Done()
			return ctx.Err()
		}
		if id == xs.ID() {
			once.Do(func() { close(renewed) })
		}
		return nil
	})
	c, _ := newTestClient(t, []string{addr}, nil)
	timeout = min(c.cfg.RequestTimeout, ttl/3) // the keeper's per-call timeout
	ss := newSessionsTTL(t, c, 2, ttl)
	x.Store(ss[0])
	y.Store(ss[1])
	xDeadline.Store(ss[0].born.Add(time.Duration(ss[0].deadline.Load())).UnixNano())
	select {
	case <-renewed:
	case <-time.After(ttl + 10*time.Second):
		t.Fatal("x's keepalive was never let through")
	}
	// Past x's old deadline, while y's call still hangs.
	waitFor(t, 10*time.Second, "x's old deadline to pass", func() bool {
		return time.Now().After(time.Unix(0, xDeadline.Load()).Add(timeout / 4))
	})
	if closed(ss[0].Done()) {
		t.Fatalf("x was renewed before its deadline but ended at it: %v", ss[0].Err())
	}
}
