package bench

import (
	"context"
	"testing"
	"time"
)

// TestOpTimerBoundsEachOperationAndRecovers: an operation that overruns
// sees its context end; the next operation gets a live context with its
// own full bound.
func TestOpTimerBoundsEachOperationAndRecovers(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	ot := newOpTimer(parent, 20*time.Millisecond)
	defer ot.close()

	// Operations well within the bound keep one context.
	first := ot.start()
	ot.stop()
	for range 100 {
		if ctx := ot.start(); ctx != first || ctx.Err() != nil {
			t.Fatalf("a short operation got a new or ended context (%v)", ctx.Err())
		}
		ot.stop()
	}

	// An overrun: the context ends within the bound's order of time.
	ctx := ot.start()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the overrunning operation's context did not end")
	}
	ot.stop()
	if ctx.Err() == nil {
		t.Fatal("context of an overrun still live after stop")
	}

	// The next operation gets a fresh context with a full bound. (stop
	// goes by the timer, not by the context: a timer that fired but whose
	// cancel has not run yet marks the context spent just the same.)
	next := ot.start()
	if next == ctx || next.Err() != nil {
		t.Fatalf("after an overrun: same context %v, ended %v", next == ctx, next.Err())
	}
	ot.stop()

	// The parent ending ends the operation's context too.
	ctx = ot.start()
	cancel()
	if ctx.Err() == nil {
		t.Fatal("the parent's cancel did not reach the operation")
	}
	ot.stop()
}
