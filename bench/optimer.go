package bench

import (
	"context"
	"time"
)

// opTimer bounds each operation of one worker by d without a context per
// operation. context.WithTimeout per operation registers a child with the
// shared parent, under a lock all workers contend for, and allocates a
// timer: 8 % of the load generator's CPU under the 64-way put, on the
// cores the nodes being measured share. Here the worker keeps one
// context and one timer, re-armed per operation; only an operation that
// overruns cancels the context, and the next one gets a fresh one.
type opTimer struct {
	parent context.Context
	d      time.Duration
	ctx    context.Context // nil: make a fresh one at the next start
	cancel context.CancelFunc
	timer  *time.Timer
}

func newOpTimer(parent context.Context, d time.Duration) *opTimer {
	return &opTimer{parent: parent, d: d}
}

// start returns the context for one operation, ending d from now.
func (o *opTimer) start() context.Context {
	if o.ctx == nil {
		ctx, cancel := context.WithCancel(o.parent)
		o.ctx, o.cancel = ctx, cancel
		o.timer = time.AfterFunc(o.d, cancel)
	} else {
		o.timer.Reset(o.d)
	}
	return o.ctx
}

// stop ends the operation. If its timer fired (or is firing), the
// context is spent: it is cancelled now, and the next start makes
// another, so a late cancel cannot reach the next operation.
func (o *opTimer) stop() {
	if !o.timer.Stop() {
		o.cancel()
		o.ctx = nil
	}
}

// close releases the context and timer.
func (o *opTimer) close() {
	if o.ctx != nil {
		o.timer.Stop()
		o.cancel()
		o.ctx = nil
	}
}
