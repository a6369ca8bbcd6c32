package rpc

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

const (
	mPush Method = iota + 20
	mSum
	mStreamFail
	mStreamWait
)

type pushReq struct{ N int }
type item struct{ I int }

type streamServer struct {
	srv      *Server
	sent     atomic.Int64
	handlerC chan context.Context
}

func newStreamServer(t testing.TB, window int) *streamServer {
	t.Helper()
	ss := &streamServer{srv: newTestServer(t, func(c *ServerConfig) { c.StreamWindow = window }), handlerC: make(chan context.Context, 4)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(HandleStream(ss.srv, mPush, "push", func(ctx context.Context, req *pushReq, st *ServerStream) error {
		for i := range req.N {
			if err := st.Send(&item{I: i}); err != nil {
				return err
			}
			ss.sent.Add(1)
		}
		return nil
	}))
	must(HandleStream(ss.srv, mSum, "sum", func(ctx context.Context, req *pushReq, st *ServerStream) error {
		sum, n := 0, 0
		for {
			var it item
			err := st.Recv(&it)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			sum += it.I
			n++
		}
		return st.Send(&item{I: sum*1000 + n})
	}))
	must(HandleStream(ss.srv, mStreamFail, "fail", func(ctx context.Context, req *pushReq, st *ServerStream) error {
		if err := st.Send(&item{I: 7}); err != nil {
			return err
		}
		return errTestUser
	}))
	must(HandleStream(ss.srv, mStreamWait, "wait", func(ctx context.Context, req *pushReq, st *ServerStream) error {
		ss.handlerC <- ctx
		<-ctx.Done()
		return ctx.Err()
	}))
	return ss
}

func TestServerPushStream(t *testing.T) {
	ss := newStreamServer(t, 8)
	c := newTestClient(t, startServer(t, ss.srv), nil)
	ctx := ctxTimeout(t, 10*time.Second)
	st, err := c.Stream(ctx, mPush, &pushReq{N: 500})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 500 {
		var it item
		if err := st.Recv(&it); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if it.I != i {
			t.Fatalf("message %d has I=%d: out of order", i, it.I)
		}
	}
	var it item
	if err := st.Recv(&it); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
}

// A client that does not read holds the server's handler at the window:
// the server buffers nothing beyond it.
func TestStreamFlowControlBoundsTheSender(t *testing.T) {
	const window = 4
	ss := newStreamServer(t, 16)
	c := newTestClient(t, startServer(t, ss.srv), func(c *ClientConfig) { c.StreamWindow = window })
	ctx := ctxTimeout(t, 10*time.Second)
	st, err := c.Stream(ctx, mPush, &pushReq{N: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitFor(t, 5*time.Second, "the sender to use its credit", func() bool { return ss.sent.Load() == window })
	time.Sleep(50 * time.Millisecond) // the sender must stay stopped, not merely be slow
	if n := ss.sent.Load(); n != window {
		t.Fatalf("server sent %d messages to a client that read none, want %d (the window)", n, window)
	}
	waitFor(t, 5*time.Second, "the window's messages to arrive", func() bool { return len(st.s.recvq) == window })
	// Reading releases credit; everything arrives.
	for i := range 1000 {
		var it item
		if err := st.Recv(&it); err != nil || it.I != i {
			t.Fatalf("message %d: %v (I=%d)", i, err, it.I)
		}
		if sent := ss.sent.Load(); sent > int64(i+1+window) {
			t.Fatalf("server sent %d while the client took %d with window %d", sent, i+1, window)
		}
	}
}

func TestClientToServerStream(t *testing.T) {
	ss := newStreamServer(t, 4)
	c := newTestClient(t, startServer(t, ss.srv), nil)
	ctx := ctxTimeout(t, 10*time.Second)
	st, err := c.Stream(ctx, mSum, &pushReq{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := 0
	for i := range 300 {
		want += i
		if err := st.Send(&item{I: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&item{}); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("send after CloseSend: %v", err)
	}
	var it item
	if err := st.Recv(&it); err != nil || it.I != want*1000+300 {
		t.Fatalf("sum: %v, %d want %d", err, it.I, want*1000+300)
	}
	if err := st.Recv(&it); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}

func TestStreamErrorCrossesTheWire(t *testing.T) {
	tab := userTable(t)
	ss := newStreamServer(t, 4)
	ss.srv.cfg.Errors = tab
	c := newTestClient(t, startServer(t, ss.srv), func(c *ClientConfig) { c.Errors = tab })
	ctx := ctxTimeout(t, 10*time.Second)
	st, err := c.Stream(ctx, mStreamFail, &pushReq{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var it item
	if err := st.Recv(&it); err != nil || it.I != 7 {
		t.Fatalf("data before the error: %v %+v", err, it)
	}
	if err := st.Recv(&it); !errors.Is(err, errTestUser) {
		t.Fatalf("got %v, want the handler's error", err)
	}
	// Calling a unary method as a stream (and back) is a request error.
	st2, err := c.Stream(ctx, mEcho, &pushReq{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if err := st2.Recv(&it); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("unknown stream method: %v", err)
	}
	if err := c.Call(ctx, mPush, &pushReq{}, nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("stream method called as unary: %v", err)
	}
}

func TestStreamCancelReachesTheHandler(t *testing.T) {
	for _, how := range []string{"close", "context"} {
		t.Run(how, func(t *testing.T) {
			ss := newStreamServer(t, 4)
			c := newTestClient(t, startServer(t, ss.srv), nil)
			ctx, cancel := context.WithCancel(ctxTimeout(t, 10*time.Second))
			defer cancel()
			st, err := c.Stream(ctx, mStreamWait, &pushReq{})
			if err != nil {
				t.Fatal(err)
			}
			hctx := <-ss.handlerC
			if how == "close" {
				st.Close()
			} else {
				cancel()
			}
			select {
			case <-hctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("handler context not cancelled")
			}
			var it item
			if err := st.Recv(&it); err == nil {
				t.Fatal("Recv on a cancelled stream succeeded")
			}
			st.Close()
			// The slot was released: the connection takes more streams.
			for range 3 {
				s2, err := c.Stream(ctxTimeout(t, 5*time.Second), mPush, &pushReq{N: 1})
				if err != nil {
					t.Fatal(err)
				}
				s2.Recv(&it)
				if err := s2.Recv(&it); !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestStreamSenderBeyondItsCreditIsCutOff(t *testing.T) {
	ss := newStreamServer(t, 4)
	addr := startServer(t, ss.srv)
	nc, fr := rawClient(t, addr, true)
	nc.Write(appendFrame(nil, Header{Type: FrameRequest, Flags: FlagStream, Method: mStreamWait, ID: 1}, []byte{0}))
	<-ss.handlerC
	// The handler never reads: the window of 4 fills, the 5th breaks the rules.
	for i := range 5 {
		nc.Write(appendFrame(nil, Header{Type: FrameStreamData, ID: 1}, []byte{0x80 | 0, byte(i)}[:1]))
	}
	expectConnError(t, fr, CodeProtocol)
	// Other clients are served.
	c := newTestClient(t, addr, nil)
	st, err := c.Stream(ctxTimeout(t, 5*time.Second), mPush, &pushReq{N: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var it item
	if err := st.Recv(&it); err != nil {
		t.Fatal(err)
	}
}

// writeFailConn fails every write once broken, as a connection closed
// under the client does, while its reader has not noticed yet.
type writeFailConn struct {
	net.Conn
	broken *atomic.Bool
}

func (c *writeFailConn) Write(p []byte) (int, error) {
	if c.broken.Load() {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}
	}
	return c.Conn.Write(p)
}

// Opening a stream on a connection that died under the client is a
// retryable ErrConnClosed, as a call is (a watch used to give up on it).
func TestStreamOpenOnADeadConnectionIsConnClosed(t *testing.T) {
	ss := newStreamServer(t, 8)
	var broken atomic.Bool
	c := newTestClient(t, startServer(t, ss.srv), func(c *ClientConfig) {
		c.PoolSize = 1
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			nc, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &writeFailConn{Conn: nc, broken: &broken}, nil
		}
	})
	ctx := ctxTimeout(t, 10*time.Second)
	st, err := c.Stream(ctx, mPush, &pushReq{N: 1})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	broken.Store(true)
	_, err = c.Stream(ctx, mPush, &pushReq{N: 1})
	if !errors.Is(err, ErrConnClosed) {
		t.Fatalf("stream on a dead connection: %v; want ErrConnClosed", err)
	}
}
