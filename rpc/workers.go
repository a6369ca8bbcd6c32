package rpc

import (
	"sync"
	"time"
)

// workerIdle is how long a handler goroutine waits for more work before
// it exits.
const workerIdle = 10 * time.Second

// workers runs handlers on goroutines that outlive one call. A fresh
// goroutine starts with a small stack, and msgpack's reflective encoder
// grows it on every call (copying it each time); a reused one keeps its
// grown stack. The number of goroutines is bounded by the calls in
// progress, which the connections bound.
type workers struct {
	tasks chan func() // unbuffered: a task goes to an idle worker or none
	done  <-chan struct{}
	wg    *sync.WaitGroup
}

// run runs f on an idle worker, or on a new one.
func (w *workers) run(f func()) {
	select {
	case w.tasks <- f:
	default:
		w.wg.Add(1)
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		f = nil
		idle.Reset(workerIdle)
		select {
		case f = <-w.tasks:
		case <-idle.C:
			return
		case <-w.done:
			return
		}
	}
}
