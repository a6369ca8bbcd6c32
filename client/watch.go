package client

import (
	"context"
	"fmt"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
)

// WatchResponse is one delivery of a watch: the events of one or more
// whole revisions, in revision order. Err, set only in a watch's last
// response, says why the watch stopped.
type WatchResponse struct {
	Events []api.Event
	// NextRevision is where the watch goes on: the revision after the last
	// one delivered (or the last one known to hold nothing for the key).
	NextRevision int64
	// Err is why the watch stopped, if not because its ctx ended:
	// errors.Is(Err, api.ErrCompacted) when it fell behind the cluster's
	// bounded history (the message names the oldest revision still
	// available; read the key again and watch from after that read's
	// revision), or a refused request (api.ErrInvalid, api.ErrTooLarge).
	Err error
}

// watchBuffer is how many responses a watch holds for a slow reader
// before it stops reading its stream (which then stops the server: rpc
// flow control).
const watchBuffer = 16

// Watch follows changes to key (or, WithPrefix, to every key with that
// prefix) from WithRevision on. Without WithRevision, Watch first reads
// the current revision (linearizable, bounded by ctx) and starts after
// it: every change made after Watch returns is delivered, even if the
// stream breaks before its first message.
//
// The watch survives node failures: when its stream fails it reconnects
// to the next endpoint and resumes from NextRevision. Events arrive in
// revision order with no gap and no duplicate: on resume it asks for
// exactly the revisions after the last one delivered, and drops anything
// older a server might repeat. The channel is closed when ctx ends, when
// the client closes, or after a response with Err. Read it promptly: a
// reader that stops holds the stream (not memory) until it reads again.
func (c *Client) Watch(ctx context.Context, key string, opts ...OpOption) <-chan WatchResponse {
	out := make(chan WatchResponse, watchBuffer)
	o, err := gatherOptions("Watch", opts, "WithPrefix", "WithRevision")
	if err == nil {
		err = c.KV().checkKey(key, o.prefix)
	}
	if err != nil {
		out <- WatchResponse{Err: err, NextRevision: o.revision}
		close(out)
		return out
	}
	w := &watcher{c: c, key: key, prefix: o.prefix, next: o.revision, out: out}
	if w.next == 0 {
		rev, err := w.currentRevision(ctx)
		if err != nil {
			out <- WatchResponse{Err: fmt.Errorf("watch %q: reading the current revision: %w", key, err)}
			close(out)
			return out
		}
		w.next = rev + 1
	}
	if !c.goroutine(func() { w.run(ctx) }) {
		out <- WatchResponse{Err: ErrClosed, NextRevision: o.revision}
		close(out)
	}
	return out
}

// watcher is one Watch's goroutine state.
type watcher struct {
	c      *Client
	key    string
	prefix bool
	next   int64 // first revision not yet delivered
	out    chan<- WatchResponse
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.out)
	c := w.c
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	n := len(c.endpoints)
	for failures := 0; ; {
		delivered, err := w.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if !streamRetryable(err) {
			w.fail(ctx, err)
			return
		}
		if delivered {
			failures = 0
		}
		failures++
		var wait time.Duration
		if failures%n == 0 {
			wait = c.backoff(failures / n)
		}
		c.logger.Info("watch stream ended; resuming", "key", w.key, "from", w.next, "wait", wait, "error", err)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// currentRevision reads the key (or prefix) to learn the revision now.
func (w *watcher) currentRevision(ctx context.Context) (int64, error) {
	if w.prefix {
		resp, err := w.c.KV().List(ctx, w.key, WithLimit(1))
		if err != nil {
			return 0, err
		}
		return resp.Read.Revision, nil
	}
	resp, err := w.c.KV().Get(ctx, w.key)
	if err != nil {
		return 0, err
	}
	return resp.Read.Revision, nil
}

// stream runs one stream from w.next until it fails, reporting whether it
// delivered anything. A retryable failure moves calls to the next
// endpoint.
func (w *watcher) stream(ctx context.Context) (delivered bool, err error) {
	ep, idx := w.c.current()
	defer func() {
		if err != nil && ctx.Err() == nil && streamRetryable(err) {
			w.c.rotate(idx, err)
		}
	}()
	req := &api.WatchRequest{Key: w.key, Prefix: w.prefix, FromRevision: w.next}
	st, err := ep.rc.Stream(ctx, rpc.Method(api.MethodWatch), req)
	if err != nil {
		return false, translate(err)
	}
	defer st.Close()
	for {
		var msg api.WatchMessage
		if err := st.Recv(&msg); err != nil {
			return delivered, translate(err)
		}
		if !w.deliver(ctx, msg) {
			return delivered, context.Cause(ctx)
		}
		delivered = true
	}
}

// deliver passes on the events of msg not delivered yet and advances
// next. Messages hold whole revisions, so next moves only between them.
func (w *watcher) deliver(ctx context.Context, msg api.WatchMessage) bool {
	var evs []api.Event
	for _, ev := range msg.Events {
		if ev.Revision >= w.next {
			evs = append(evs, ev)
		}
	}
	next := w.next
	if len(evs) > 0 {
		next = max(next, evs[len(evs)-1].Revision+1)
	}
	w.next = max(next, msg.NextRevision)
	if len(evs) == 0 {
		return true
	}
	select {
	case w.out <- WatchResponse{Events: evs, NextRevision: w.next}:
		return true
	case <-ctx.Done():
		return false
	}
}

// fail delivers the watch's last response.
func (w *watcher) fail(ctx context.Context, err error) {
	resp := WatchResponse{NextRevision: w.next, Err: fmt.Errorf("watch %q from revision %d: %w", w.key, w.next, err)}
	select {
	case w.out <- resp:
	case <-ctx.Done():
	}
}
