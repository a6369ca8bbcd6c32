package client

import (
	"context"
	"fmt"
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
