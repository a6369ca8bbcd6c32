package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
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
