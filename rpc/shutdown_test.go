package rpc

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// Close of every part while each of its goroutines is busy: blocked
// handlers, a stream stopped by flow control, a client waiting for a
// slot. Everything returns, and no goroutine is left behind. (The peer
// transport's lanes: rpc/peer, TestTransportCloseWhileBusy.)
func TestCloseWhileBusy(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		ss := newStreamServer(t, 4)
		cs := newCallServer(t, func(c *ServerConfig) { c.MaxConcurrentCalls = 8 })
		addrS := startServer(t, ss.srv)
		addrC := startServer(t, cs.srv)
		c := newTestClient(t, addrC, func(c *ClientConfig) { c.PoolSize = 1 })
		cStream := newTestClient(t, addrS, func(c *ClientConfig) { c.StreamWindow = 2 })
		ctx := ctxTimeout(t, 20*time.Second)

		errc := make(chan error, 20)
		for range 12 { // 8 run and block, 4 wait for a slot
			go func() { errc <- c.Call(ctx, mBlock, &echoReq{}, nil) }()
		}
		for range 8 {
			<-cs.started
		}
		st, err := cStream.Stream(ctx, mPush, &pushReq{N: 1000})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the stream to stall", func() bool { return ss.sent.Load() == 2 })

		done := make(chan struct{})
		go func() {
			cs.srv.Close()
			ss.srv.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return while busy")
		}
		for range 12 {
			if err := <-errc; err == nil {
				t.Error("a call cut by shutdown succeeded")
			}
		}
		var it item
		for {
			if err := st.Recv(&it); err != nil {
				if !errors.Is(err, ErrShuttingDown) && !errors.Is(err, ErrConnClosed) {
					t.Errorf("stream ended with %v", err)
				}
				break
			}
		}
		st.Close()
		c.Close()
		cStream.Close()
	}()
	waitFor(t, 10*time.Second, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before+2 })
}

func TestClientCloseFailsCallsInFlight(t *testing.T) {
	cs := newCallServer(t, nil)
	c := newTestClient(t, startServer(t, cs.srv), nil)
	ctx := ctxTimeout(t, 10*time.Second)
	errc := make(chan error, 4)
	for range 4 {
		go func() { errc <- c.Call(ctx, mBlock, &echoReq{}, nil) }()
	}
	for range 4 {
		<-cs.started
	}
	c.Close()
	for range 4 {
		if err := <-errc; !errors.Is(err, ErrConnClosed) || !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v", err)
		}
	}
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
}

// TestCloseBetweenAcceptAndServeDoesNotHang: a connection accepted just
// before Close, whose goroutine had not yet taken the socket when Close
// asked every connection to shut down, must not be served afterwards.
// (Seen as a 10-minute hang of server.Close in TestSessionSurvivesFailover:
// Close found no socket to close, the connection then finished its
// handshake with a live peer and read forever.)
func TestCloseBetweenAcceptAndServeDoesNotHang(t *testing.T) {
	srv := newTestServer(t, nil)
	l := listen(t)
	defer l.Close()
	// What accept does, with the connection's goroutine held back before
	// serve, as the scheduler may hold it.
	sc := &serverConn{srv: srv, active: map[uint64]*activeCall{}}
	srv.mu.Lock()
	srv.conns[sc] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()

	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	waitFor(t, 10*time.Second, "Close to ask the connection to shut down", func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.stopped
	})

	// Now the goroutine runs, on a socket whose client completes the
	// handshake and stays.
	c := newTestClient(t, l.Addr().String(), nil)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Call(ctx, 1, nil, nil)
	}()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer srv.wg.Done()
		defer srv.forget(sc)
		sc.serve(nc)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a connection accepted just before it")
	}
}
