package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

// inner is the worker's context behind an operation's view of it.
func inner(ctx context.Context) context.Context { return ctx.(*opContext).Context }

// TestOpTimerBoundsEachOperationAndRecovers: each operation's context
// carries its deadline (which the client passes to the server); one that
// overruns ends with DeadlineExceeded; the next operation gets a live
// context with its own full bound; the run's end reaches the operation.
func TestOpTimerBoundsEachOperationAndRecovers(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	const bound = 20 * time.Millisecond
	ot := newOpTimer(parent, bound)
	defer ot.close()

	// Operations well within the bound share one worker context, and each
	// has a deadline of its own.
	before := time.Now()
	first := ot.start()
	dl, ok := first.Deadline()
	if !ok || dl.Before(before.Add(bound)) || dl.After(time.Now().Add(bound)) {
		t.Fatalf("deadline %v (set %v), want %v from the start", dl, ok, bound)
	}
	ot.stop()
	for range 100 {
		if ctx := ot.start(); inner(ctx) != inner(first) || ctx.Err() != nil {
			t.Fatalf("a short operation got a new or ended context (%v)", ctx.Err())
		}
		ot.stop()
	}

	// An overrun: the context ends, as a deadline does.
	ctx := ot.start()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the overrunning operation's context did not end")
	}
	ot.stop()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Fatalf("overrun ended with %v (cause %v), want the deadline", ctx.Err(), context.Cause(ctx))
	}

	// The next operation gets a fresh context with a full bound. (stop
	// goes by the timer, not by the context: a timer that fired but whose
	// cancel has not run yet marks the context spent just the same.)
	next := ot.start()
	if inner(next) == inner(ctx) || next.Err() != nil {
		t.Fatalf("after an overrun: same context %v, ended %v", inner(next) == inner(ctx), next.Err())
	}
	ot.stop()

	// The parent ending ends the operation's context too, as a cancel.
	ctx = ot.start()
	cancel()
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("after the parent's cancel: %v, want canceled", ctx.Err())
	}
	ot.stop()
}
