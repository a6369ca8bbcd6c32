package server

import (
	"context"
	"sync"
	"time"
)

// leaderConfirmer shares leadership confirmations among keepalives. A
// keepalive may be answered once a ReadIndex round that started after it
// was recorded has succeeded; every keepalive that arrives while a round
// runs joins the next one, so at most one round is in flight and one is
// gathering waiters, however many keepalives come in (100,000 sessions
// with TTL 60 s send about 5,000 a second).
type leaderConfirmer struct {
	confirm func(ctx context.Context) error // one round (Node.ReadIndex)
	timeout time.Duration                   // bounds one round

	mu      sync.Mutex
	next    *confirmRound // gathering waiters; starts when the running one ends
	running bool
}

type confirmRound struct {
	done    chan struct{}
	err     error
	waiters int // guarded by leaderConfirmer.mu until the round starts
}

// wait returns nil once a confirmation round that started after the call
// has succeeded, or that round's error, or ctx's.
func (c *leaderConfirmer) wait(ctx context.Context) error {
	c.mu.Lock()
	if c.next == nil {
		c.next = &confirmRound{done: make(chan struct{})}
	}
	r := c.next
	r.waiters++
	if !c.running {
		c.running = true
		go c.loop()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop runs rounds back to back while keepalives wait for one.
func (c *leaderConfirmer) loop() {
	for {
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		r.err = c.confirm(ctx)
		cancel()
		close(r.done)
	}
}
