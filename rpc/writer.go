package rpc

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// frameWriter writes frames to a connection, coalescing frames queued
// while a write is in progress into the next write.
//
// A goroutine that queues a frame while no write is in progress writes the
// batch itself (no goroutine hand-off on an idle connection, which keeps
// round trips short); anything queued meanwhile is left to the
// connection's flusher goroutine, so no caller flushes for others for
// long. At most limit bytes wait (plus one frame); further writers block
// until the flusher makes room, their context ends or the connection dies.
type frameWriter struct {
	nc           net.Conn
	writeTimeout time.Duration
	limit        int
	onError      func(error) // called once with the first write error
	done         <-chan struct{}

	wake chan struct{} // cap 1: work for the flusher goroutine

	// inflight counts calls in progress on the connection (kept by its
	// owner): with more than one, writes go through the flusher so that
	// concurrent answers share a system call; with one, the writer writes
	// at once, which keeps a lone round trip short.
	inflight atomic.Int32

	mu       sync.Mutex // protects everything below
	buf      []byte     // frames waiting to be written
	spare    []byte     // the other buffer, nil while a write uses it
	flushing bool       // a write is in progress or the flusher owns the next one
	err      error      // sticky: no more writes once set
	space    chan struct{}
	drained  chan struct{} // non-nil while drain waits; closed when idle
}

func newFrameWriter(nc net.Conn, limit int, writeTimeout time.Duration, done <-chan struct{}, onError func(error)) *frameWriter {
	return &frameWriter{
		nc: nc, limit: limit, writeTimeout: writeTimeout, done: done, onError: onError,
		wake: make(chan struct{}, 1), buf: make([]byte, 0, 16<<10), spare: make([]byte, 0, 16<<10),
	}
}

// write queues a frame of header h and body prefix+body.
func (w *frameWriter) write(ctx context.Context, h Header, prefix, body []byte) error {
	n := HeaderSize + len(prefix) + len(body)
	h.Length = uint32(len(prefix) + len(body))
	w.mu.Lock()
	for w.err == nil && len(w.buf) > 0 && len(w.buf)+n > w.limit {
		if w.space == nil {
			w.space = make(chan struct{})
		}
		space := w.space
		w.mu.Unlock()
		select {
		case <-space:
		case <-w.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	var hdr [HeaderSize]byte
	h.put(hdr[:])
	w.buf = append(w.buf, hdr[:]...)
	w.buf = append(w.buf, prefix...)
	w.buf = append(w.buf, body...)
	if w.flushing {
		w.mu.Unlock()
		return nil
	}
	w.flushing = true
	if w.inflight.Load() > 1 {
		// Others are about to write too: let the flusher take them all in
		// one write instead of a system call each.
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
		return nil
	}
	out := w.takeLocked()
	w.mu.Unlock()

	err := w.flush(out)

	w.mu.Lock()
	w.spare = recycle(out)
	if len(w.buf) > 0 && w.err == nil {
		// Hand the rest to the flusher; flushing stays true.
		select {
		case w.wake <- struct{}{}:
		default:
		}
	} else {
		w.idleLocked()
	}
	w.mu.Unlock()
	return err
}

// idleLocked ends a flushing run and wakes drain.
func (w *frameWriter) idleLocked() {
	w.flushing = false
	if w.drained != nil {
		close(w.drained)
		w.drained = nil
	}
}

// drain waits until everything queued was written (or failed).
func (w *frameWriter) drain(ctx context.Context) {
	w.mu.Lock()
	if !w.flushing || w.err != nil {
		w.mu.Unlock()
		return
	}
	if w.drained == nil {
		w.drained = make(chan struct{})
	}
	d := w.drained
	w.mu.Unlock()
	select {
	case <-d:
	case <-ctx.Done():
	case <-w.done:
	}
}

// waitRoom waits until fewer than limit bytes are queued (or the writer
// failed). A reader calls it before starting more work whose answers would
// only queue up behind a peer that does not read.
func (w *frameWriter) waitRoom(ctx context.Context) error {
	w.mu.Lock()
	for w.err == nil && len(w.buf) >= w.limit {
		if w.space == nil {
			w.space = make(chan struct{})
		}
		space := w.space
		w.mu.Unlock()
		select {
		case <-space:
		case <-w.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
	}
	err := w.err
	w.mu.Unlock()
	return err
}

// takeLocked swaps the buffers and wakes writers waiting for room.
func (w *frameWriter) takeLocked() []byte {
	out := w.buf
	w.buf = w.spare[:0]
	w.spare = nil
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
	return out
}

func recycle(b []byte) []byte {
	if cap(b) > 1<<20 {
		return make([]byte, 0, 16<<10)
	}
	return b[:0]
}

// flush writes out; on failure it records the error and reports it.
func (w *frameWriter) flush(out []byte) error {
	if w.writeTimeout > 0 {
		_ = w.nc.SetWriteDeadline(time.Now().Add(w.writeTimeout))
	}
	_, err := w.nc.Write(out)
	if err != nil {
		w.fail(err)
	}
	return err
}

// fail makes every later write return err and reports it once.
func (w *frameWriter) fail(err error) {
	w.mu.Lock()
	first := w.err == nil
	if first {
		w.err = err
		if w.space != nil {
			close(w.space)
			w.space = nil
		}
	}
	w.mu.Unlock()
	if first && w.onError != nil {
		w.onError(err)
	}
}

// stop makes every later write return err, without reporting it: the
// connection is closing already.
func (w *frameWriter) stop(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
	if w.drained != nil {
		close(w.drained)
		w.drained = nil
	}
}

// run is the connection's flusher goroutine; it returns when done closes.
func (w *frameWriter) run() {
	for {
		select {
		case <-w.wake:
		case <-w.done:
			return
		}
		// Let goroutines that are about to queue frames run first, so that
		// one write carries them all.
		runtime.Gosched()
		for {
			w.mu.Lock()
			if len(w.buf) == 0 || w.err != nil {
				w.idleLocked()
				w.mu.Unlock()
				break
			}
			out := w.takeLocked()
			w.mu.Unlock()
			w.flush(out)
			w.mu.Lock()
			w.spare = recycle(out)
			w.mu.Unlock()
		}
	}
}
