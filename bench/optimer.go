package bench

import (
	"context"
	"time"
)

// opTimer bounds each operation of one worker by d without registering a
// context per operation. context.WithTimeout per operation registers a
// child with the shared parent, under a lock all workers contend for, and
// allocates a timer: 8 % of the load generator's CPU under the 64-way put,
// on the cores the nodes being measured share. Here the worker keeps one
// cancellable context and one timer, re-armed per operation; only an
// operation that overruns cancels the context (with cause
// context.DeadlineExceeded), and the next one gets a fresh one. Each
// operation sees the context through an opContext that reports its own
// deadline, so the client still tells the server how long the call may
// take, as with WithTimeout.
type opTimer struct {
	parent context.Context
	d      time.Duration
	ctx    context.Context // nil: make a fresh one at the next start
	cancel context.CancelCauseFunc
	timer  *time.Timer
}

// opContext is one operation's view of the worker's context: the same
// cancellation, with the operation's deadline, and DeadlineExceeded (not
// Canceled) once the timer ended it.
type opContext struct {
	context.Context
	deadline time.Time
}

func (c *opContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *opContext) Err() error {
	err := c.Context.Err()
	if err != nil && context.Cause(c.Context) == context.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return err
}

func newOpTimer(parent context.Context, d time.Duration) *opTimer {
	return &opTimer{parent: parent, d: d}
}

// start returns the context for one operation, ending d from now.
func (o *opTimer) start() context.Context {
	if o.ctx == nil {
		ctx, cancel := context.WithCancelCause(o.parent)
		o.ctx, o.cancel = ctx, cancel
		o.timer = time.AfterFunc(o.d, func() { cancel(context.DeadlineExceeded) })
	} else {
		o.timer.Reset(o.d)
	}
	return &opContext{Context: o.ctx, deadline: time.Now().Add(o.d)}
}

// stop ends the operation. If its timer fired (or is firing), the
// context is spent: it is cancelled now, and the next start makes
// another, so a late cancel cannot reach the next operation.
func (o *opTimer) stop() {
	if !o.timer.Stop() {
		o.cancel(context.DeadlineExceeded)
		o.ctx = nil
	}
}

// close releases the context and timer.
func (o *opTimer) close() {
	if o.ctx != nil {
		o.timer.Stop()
		o.cancel(context.Canceled)
		o.ctx = nil
	}
}
