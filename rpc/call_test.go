package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// callServer registers the test methods. block is closed to release
// mBlock calls; seen receives the context of each mSleepCtx call.
type callServer struct {
	srv     *Server
	block   chan struct{}
	started chan struct{}
	seen    chan context.Context
	count   atomic.Int64
}

func newCallServer(t testing.TB, mod func(*ServerConfig)) *callServer {
	t.Helper()
	cs := &callServer{srv: newTestServer(t, mod), block: make(chan struct{}), started: make(chan struct{}, 1024), seen: make(chan context.Context, 16)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(Handle(cs.srv, mEcho, "echo", func(ctx context.Context, req *echoReq) (*echoResp, error) {
		return &echoResp{Text: req.Text, Data: req.Data, N: req.N + 1}, nil
	}))
	must(Handle(cs.srv, mFail, "fail", func(ctx context.Context, req *echoReq) (*echoResp, error) {
		return nil, fmt.Errorf("failing on purpose with %q: %w", req.Text, errTestUser)
	}))
	must(Handle(cs.srv, mBlock, "block", func(ctx context.Context, req *echoReq) (*echoResp, error) {
		cs.started <- struct{}{}
		select {
		case <-cs.block:
			return &echoResp{N: 1}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	must(Handle(cs.srv, mSleepCtx, "ctx", func(ctx context.Context, req *echoReq) (*echoResp, error) {
		cs.seen <- ctx
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	must(Handle(cs.srv, mPanic, "panic", func(ctx context.Context, req *echoReq) (*echoResp, error) {
		panic("handler bug")
	}))
	must(Handle(cs.srv, mCount, "count", func(ctx context.Context, req *echoReq) (*echoResp, error) {
		cs.count.Add(1)
		return nil, nil
	}, Inline()))
	must(Handle(cs.srv, mBig, "big", func(ctx context.Context, req *echoReq) (*echoResp, error) {
		return &echoResp{Data: make([]byte, req.N)}, nil
	}))
	return cs
}

func userTable(t testing.TB) *ErrorTable {
	tab, err := NewErrorTable(map[Code]error{FirstUserCode: errTestUser})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestUnaryCallRoundTrip(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), nil)
	ctx := ctxTimeout(t, 10*time.Second)
	var resp echoResp
	if err := c.Call(ctx, mEcho, &echoReq{Text: "hi", Data: []byte{1, 2, 3}, N: 41}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Text != "hi" || !bytes.Equal(resp.Data, []byte{1, 2, 3}) || resp.N != 42 {
		t.Fatalf("got %+v", resp)
	}
	// A nil request is the zero value; a nil resp ignores the body.
	if err := c.Call(ctx, mEcho, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Empty response (handler returned nil, nil).
	if err := c.Call(ctx, mCount, nil, &resp); err != nil {
		t.Fatal(err)
	}
}

func TestManyCallsInFlightOnOneConnection(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), func(cfg *ClientConfig) { cfg.PoolSize = 1 })
	ctx := ctxTimeout(t, 20*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp echoResp
			text := fmt.Sprint("call ", i)
			if err := c.Call(ctx, mEcho, &echoReq{Text: text, N: i}, &resp); err != nil {
				errs <- err
				return
			}
			if resp.Text != text || resp.N != i+1 {
				errs <- fmt.Errorf("call %d got %+v: answers crossed", i, resp)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRemoteErrorsMatchSentinels(t *testing.T) {
	tab := userTable(t)
	cs := newCallServer(t, func(c *ServerConfig) { c.Errors = tab })
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.Errors = tab })
	ctx := ctxTimeout(t, 10*time.Second)

	err := c.Call(ctx, mFail, &echoReq{Text: "x"}, nil)
	var re *RemoteError
	if !errors.Is(err, errTestUser) || !errors.As(err, &re) || re.Code != FirstUserCode {
		t.Fatalf("user error: got %v", err)
	}
	if !strings.Contains(err.Error(), `failing on purpose with "x"`) || !strings.Contains(err.Error(), c.Addr()) {
		t.Fatalf("error text lost detail: %v", err)
	}
	// The connection stays after a request error.
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(ctx, 999, &echoReq{}, nil); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("unknown method: got %v", err)
	}
	if err := c.Call(ctx, mPanic, &echoReq{}, nil); !errors.Is(err, ErrInternal) || !strings.Contains(err.Error(), "handler bug") {
		t.Fatalf("panic: got %v", err)
	}
	// A client without the user code still sees the message and code.
	c2 := newTestClient(t, c.Addr(), nil)
	err = c2.Call(ctx, mFail, &echoReq{}, nil)
	if !errors.As(err, &re) || re.Code != FirstUserCode || errors.Is(err, errTestUser) {
		t.Fatalf("unregistered code: got %v", err)
	}
}

func TestErrorTableRejectsClashes(t *testing.T) {
	if _, err := NewErrorTable(map[Code]error{5: errors.New("x")}); err == nil {
		t.Fatal("reserved code accepted")
	}
	if _, err := NewErrorTable(map[Code]error{1000: errTestUser, 1001: errTestUser}); err == nil {
		t.Fatal("one error under two codes accepted")
	}
	if _, err := NewErrorTable(map[Code]error{1000: ErrOverloaded}); err == nil {
		t.Fatal("built-in sentinel under a user code accepted")
	}
}

func TestCancellationReachesTheHandler(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Call(ctx, mSleepCtx, &echoReq{}, nil) }()
	var hctx context.Context
	select {
	case hctx = <-cs.seen:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never ran")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("call: got %v, want context.Canceled", err)
	}
	select {
	case <-hctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("cancel frame did not cancel the handler's context")
	}
	// The connection is still good.
	if err := c.Call(ctxTimeout(t, 5*time.Second), mEcho, &echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDeadlineTravelsToTheHandler(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx, mSleepCtx, &echoReq{}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	hctx := <-cs.seen
	dl, ok := hctx.Deadline()
	if !ok {
		t.Fatal("handler context has no deadline")
	}
	if d := dl.Sub(start); d > time.Second || d <= 0 {
		t.Fatalf("handler deadline %v after the call started, want about 300ms", d)
	}
	// An already expired context never reaches the wire.
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired ctx: got %v", err)
	}
}

// CallTimeout behaves as Call under context.WithTimeout: the server gets
// the earlier of the two ends as the deadline, and an expired call fails
// with DeadlineExceeded and is cancelled on the server.
func TestCallTimeoutEndsTheCallAndTellsTheServer(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), nil)
	ctx := ctxTimeout(t, 10*time.Second)
	// The first call dials (bounded by a derived context); the rest find
	// the connection ready and take the timer path.
	for i := range 2 {
		start := time.Now()
		err := c.CallTimeout(ctx, mSleepCtx, &echoReq{}, nil, 200*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call %d: got %v, want DeadlineExceeded", i, err)
		}
		if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
			t.Errorf("call %d ended after %v, want about 200ms", i, d)
		}
		hctx := <-cs.seen
		if dl, ok := hctx.Deadline(); !ok || dl.Sub(start) > time.Second {
			t.Errorf("call %d: handler deadline %v (set %v), want about 200ms after the start", i, dl.Sub(start), ok)
		}
		select {
		case <-hctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d: the handler's context did not end", i)
		}
	}
	// The caller's earlier deadline wins on the wire.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.CallTimeout(short, mSleepCtx, &echoReq{}, nil, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short ctx: got %v", err)
	}
	if dl, ok := (<-cs.seen).Deadline(); !ok || dl.Sub(start) > time.Second {
		t.Errorf("handler deadline %v after the start, want about 100ms", dl.Sub(start))
	}
	// An answer before the timeout is an answer.
	var resp echoResp
	if err := c.CallTimeout(ctx, mEcho, &echoReq{N: 41}, &resp, time.Minute); err != nil || resp.N != 42 {
		t.Fatalf("echo: %+v, %v", resp, err)
	}
}

// A CallTimeout waiting for a call slot (the server's limit is reached)
// also ends with its timeout, as under context.WithTimeout.
func TestCallTimeoutBoundsTheWaitForASlot(t *testing.T) {
	cs := newCallServer(t, func(c *ServerConfig) { c.MaxConcurrentCalls = 1 })
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	go func() { _ = c.Call(ctx, mBlock, &echoReq{}, nil) }()
	<-cs.started
	defer close(cs.block)
	start := time.Now()
	err := c.CallTimeout(ctx, mEcho, &echoReq{}, nil, 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call waiting for a slot: %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("it ended after %v, want about 200ms", d)
	}
}

// A call's context is not derived from its connection's; the connection
// ending must still cancel every call in progress on it.
func TestHandlerContextEndsWithItsConnection(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	errc := make(chan error, 2)
	for range 2 {
		go func() { errc <- c.Call(ctx, mSleepCtx, &echoReq{}, nil) }()
	}
	seen := []context.Context{<-cs.seen, <-cs.seen}
	c.Close()
	for i, hctx := range seen {
		select {
		case <-hctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("handler %d still running 5s after its connection closed", i)
		}
	}
	for range 2 {
		if err := <-errc; err == nil {
			t.Error("a call cut by Close succeeded")
		}
	}
}

func TestPendingCallsFailWhenTheConnectionDies(t *testing.T) {
	cs := newCallServer(t, nil)
	addr := startServer(t, cs.srv)
	c := newTestClient(t, addr, func(c *ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	const n = 5
	errc := make(chan error, n)
	for range n {
		go func() { errc <- c.Call(ctx, mBlock, &echoReq{}, nil) }()
	}
	for range n {
		<-cs.started
	}
	cs.srv.Close()
	for range n {
		err := <-errc
		if !errors.Is(err, ErrConnClosed) || !errors.Is(err, ErrShuttingDown) || !strings.Contains(err.Error(), addr) {
			t.Errorf("got %v, want connection closed (shutting down) naming %s", err, addr)
		}
	}
}

func TestMaxConcurrentCallsPerConnection(t *testing.T) {
	cs := newCallServer(t, func(c *ServerConfig) { c.MaxConcurrentCalls = 3 })
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	errc := make(chan error, 4)
	for range 3 {
		go func() { errc <- c.Call(ctx, mBlock, &echoReq{}, nil) }()
	}
	for range 3 {
		<-cs.started
	}
	// The client knows the server's limit and waits for a slot.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := c.Call(short, mEcho, &echoReq{}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("4th call: got %v, want to wait for a slot", err)
	}
	go func() { errc <- c.Call(ctx, mEcho, &echoReq{}, nil) }()
	close(cs.block)
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerRefusesCallsBeyondItsLimit(t *testing.T) {
	// A client that ignores the limit (here: told a larger one) is answered
	// with ErrOverloaded, and the connection stays.
	cs := newCallServer(t, func(c *ServerConfig) { c.MaxConcurrentCalls = 2 })
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	cc, err := c.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cc.slots = make(chan struct{}, 10)
	errc := make(chan error, 3)
	for range 2 {
		go func() { errc <- cc.call(ctx, mBlock, &echoReq{}, nil, 0) }()
	}
	<-cs.started
	<-cs.started
	if err := cc.call(ctx, mEcho, &echoReq{}, nil, 0); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("3rd call: got %v, want ErrOverloaded", err)
	}
	close(cs.block)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.call(ctx, mEcho, &echoReq{}, nil, 0); err != nil {
		t.Fatal(err)
	}
}

func TestFrameSizeLimits(t *testing.T) {
	const limit = 64 << 10
	cs := newCallServer(t, func(c *ServerConfig) { c.MaxFrameSize = limit })
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.MaxFrameSize = limit; c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	// Too large a request is refused before it leaves; the connection stays.
	err := c.Call(ctx, mEcho, &echoReq{Data: make([]byte, limit)}, nil)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("big request: got %v", err)
	}
	// Too large a response is replaced by an error.
	if err := c.Call(ctx, mBig, &echoReq{N: limit}, nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("big response: got %v", err)
	}
	var resp echoResp
	if err := c.Call(ctx, mBig, &echoReq{N: limit - 100}, &resp); err != nil || len(resp.Data) != limit-100 {
		t.Fatalf("response just under the limit: %v (%d bytes)", err, len(resp.Data))
	}
}

func TestIdleConnectionsAreClosedAndCallsRedial(t *testing.T) {
	cs := newCallServer(t, func(c *ServerConfig) { c.IdleTimeout = 50 * time.Millisecond })
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	first, _ := c.conn(ctx)
	waitFor(t, 5*time.Second, "idle close", first.isClosed)
	if err := first.closeErr(); !errors.Is(err, ErrIdle) {
		t.Fatalf("closed with %v, want ErrIdle", err)
	}
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	// A call in progress keeps the connection open past the idle timeout.
	errc := make(chan error, 1)
	go func() { errc <- c.Call(ctx, mBlock, &echoReq{}, nil) }()
	<-cs.started
	cc, _ := c.conn(ctx)
	time.Sleep(200 * time.Millisecond) // several idle periods pass while a call runs
	if cc.isClosed() {
		t.Fatal("connection with a call in progress was closed as idle")
	}
	close(cs.block)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestOnewayNotify(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), func(c *ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	for range 100 {
		if err := c.Notify(ctx, mCount, &echoReq{}); err != nil {
			t.Fatal(err)
		}
	}
	// Unknown one-way methods are dropped without an answer.
	if err := c.Notify(ctx, 999, &echoReq{}); err != nil {
		t.Fatal(err)
	}
	// Calls after notifies on the same connection see them handled (inline
	// handlers run in order).
	if err := c.Call(ctx, mCount, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := cs.count.Load(); n != 101 {
		t.Fatalf("count %d, want 101", n)
	}
}
