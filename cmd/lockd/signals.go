package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// signalContext returns a context cancelled by the first SIGINT or
// SIGTERM (its cause names the signal), so that the node shuts down
// cleanly. A second signal exits at once with status 1, for a shutdown
// that hangs. stop releases the signals and joins the watcher.
func signalContext(stderr io.Writer) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() { // signal watcher: ends with stop
		defer close(exited)
		select {
		case s := <-sigs:
			cancel(fmt.Errorf("received %v", s))
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			fmt.Fprintf(stderr, "lockd: received %v again: exiting without a clean shutdown\n", s)
			os.Exit(exitFailure)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		<-exited
		cancel(nil)
	}
}

// parentCheckInterval is how often a node started by lockd dev checks
// that its parent is still there.
const parentCheckInterval = 250 * time.Millisecond

// watchParent returns a context cancelled when this process's parent is
// no longer ppid: a node that lockd dev started stops when lockd dev is
// gone, however it went (even SIGKILL), instead of running on orphaned.
// stop joins the watcher.
func watchParent(ctx context.Context, ppid int) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	if os.Getppid() != ppid {
		cancel(fmt.Errorf("parent process %d is gone", ppid))
		return ctx, func() {}
	}
	exited := make(chan struct{})
	go func() { // parent watcher: ends when ctx ends
		defer close(exited)
		t := time.NewTicker(parentCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != ppid {
					cancel(fmt.Errorf("parent process %d (lockd dev) is gone", ppid))
					return
				}
			}
		}
	}()
	return ctx, func() {
		cancel(nil)
		<-exited
	}
}
