package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConfirmerSharesRoundsAndNeverReusesAnEarlierOne: keepalives that
// arrive while a round runs share the next round, which starts after
// them; a round's failure reaches exactly its waiters.
func TestConfirmerSharesRoundsAndNeverReusesAnEarlierOne(t *testing.T) {
	var rounds atomic.Int32
	release := make(chan error)
	started := make(chan struct{}, 16)
	c := &leaderConfirmer{timeout: time.Minute, confirm: func(ctx context.Context) error {
		rounds.Add(1)
		started <- struct{}{}
		return <-release
	}}
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- c.wait(ctx) }()
	<-started // round 1 runs
	// These arrive during round 1: they must not be answered by it.
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- c.wait(ctx) }()
	}
	waitFor(t, 5*time.Second, "the later waiters to queue for the next round", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.next != nil && c.next.waiters == n
	})
	release <- nil // round 1 succeeds
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatalf("a waiter that came during round 1 was answered by it (%v)", err)
	default:
	}
	<-started // round 2 runs for all of them
	lost := errors.New("leadership lost")
	release <- lost
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, lost) {
			t.Fatalf("waiter of round 2 got %v, want its round's error", err)
		}
	}
	if got := rounds.Load(); got != 2 {
		t.Fatalf("%d rounds for 21 waiters in two waves; want 2", got)
	}
}
