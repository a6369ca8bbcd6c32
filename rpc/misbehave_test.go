package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawClient opens a connection and, if handshake is set, says hello.
func rawClient(t testing.TB, addr string, handshake bool) (net.Conn, *frameReader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	fr := newFrameReader(nc, DefaultMaxFrameSize)
	if handshake {
		cds := newCodecs()
		es, _ := cds.encode(hello{Magic: protocolMagic, MinVersion: 1, MaxVersion: 1, ClusterID: testCluster, MaxFrame: 1 << 20, Window: 4})
		if _, err := nc.Write(appendFrame(nil, Header{Type: FrameHello}, es.buf)); err != nil {
			t.Fatal(err)
		}
		if _, err := readHelloAck(fr, newDecoder(cds.h), defaultErrorTable(), addr, testCluster); err != nil {
			t.Fatal(err)
		}
	}
	return nc, fr
}

// expectConnError reads until the connection-level error frame and checks
// its code, then expects the server to close.
func expectConnError(t testing.TB, fr *frameReader, want Code) {
	t.Helper()
	for {
		h, body, err := fr.next()
		if err != nil {
			t.Fatalf("want an error frame with code %d, got read error %v", want, err)
		}
		if h.Type != FrameError || h.ID != 0 {
			continue
		}
		var we wireError
		if err := newDecoder(NewHandle()).decode(body, &we); err != nil {
			t.Fatal(err)
		}
		if we.Code != want {
			t.Fatalf("error frame code %d (%s), want %d", we.Code, we.Message, want)
		}
		break
	}
	if _, _, err := fr.next(); err == nil {
		t.Fatal("connection still open after a connection-level error")
	}
}

// wellBehaved calls the server in a loop until stop, counting failures.
func wellBehaved(t *testing.T, c *Client, stop <-chan struct{}) (calls, failures *atomic.Int64, wait func()) {
	calls, failures = new(atomic.Int64), new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(60 * time.Second)
		for i := 0; i < 1_000_000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var resp echoResp
			err := c.Call(ctx, mEcho, &echoReq{N: i}, &resp)
			cancel()
			calls.Add(1)
			if err != nil || resp.N != i+1 {
				failures.Add(1)
				t.Errorf("well-behaved call %d: %v", i, err)
			}
		}
	}()
	return calls, failures, wg.Wait
}

func TestMisbehavingClients(t *testing.T) {
	cs := newCallServer(t, func(c *ServerConfig) {
		c.FrameTimeout = 200 * time.Millisecond
		c.HandshakeTimeout = 300 * time.Millisecond
	})
	addr := startServer(t, cs.srv)
	good := newTestClient(t, addr, nil)
	stop := make(chan struct{})
	calls, failures, wait := wellBehaved(t, good, stop)
	defer func() {
		close(stop)
		wait()
		if calls.Load() == 0 || failures.Load() != 0 {
			t.Fatalf("well-behaved client: %d calls, %d failures", calls.Load(), failures.Load())
		}
		t.Logf("well-behaved client made %d calls during the abuse", calls.Load())
	}()

	t.Run("garbage instead of a hello", func(t *testing.T) {
		nc, fr := rawClient(t, addr, false)
		junk := make([]byte, 4096)
		rand.New(rand.NewSource(1)).Read(junk)
		junk[4] = byte(FrameHello) // a plausible type; the length is junk
		nc.Write(junk)
		expectConnError(t, fr, CodeHandshake)
	})
	t.Run("garbage after the handshake", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		junk := make([]byte, 4096)
		rand.New(rand.NewSource(2)).Read(junk)
		junk[0], junk[1] = 0, 0 // a length under the limit, so the type is checked
		junk[4] = 200
		nc.Write(junk)
		expectConnError(t, fr, CodeProtocol)
	})
	t.Run("1 GiB length prefix", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		var hdr [HeaderSize]byte
		Header{Length: 1 << 30, Type: FrameRequest, Method: mEcho, ID: 1}.put(hdr[:])
		nc.Write(hdr[:])
		expectConnError(t, fr, CodeFrameTooLarge)
	})
	t.Run("1 GiB length prefix before the handshake", func(t *testing.T) {
		nc, fr := rawClient(t, addr, false)
		var hdr [HeaderSize]byte
		Header{Length: 1 << 30, Type: FrameHello}.put(hdr[:])
		nc.Write(hdr[:])
		expectConnError(t, fr, CodeHandshake)
	})
	t.Run("half-sent frame then silence", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		var hdr [HeaderSize]byte
		Header{Length: 1000, Type: FrameRequest, Method: mEcho, ID: 1}.put(hdr[:])
		nc.Write(append(hdr[:], 0, 1, 2, 3, 4))
		start := time.Now()
		expectConnError(t, fr, CodeUnknown) // a read timeout has no code of its own
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("half-sent frame held the connection for %v", d)
		}
	})
	t.Run("half-sent frame then close", func(t *testing.T) {
		nc, _ := rawClient(t, addr, true)
		var hdr [HeaderSize]byte
		Header{Length: 1000, Type: FrameRequest, Method: mEcho, ID: 1}.put(hdr[:])
		nc.Write(append(hdr[:], 9, 9, 9))
		nc.Close()
	})
	t.Run("silence instead of a hello", func(t *testing.T) {
		_, fr := rawClient(t, addr, false)
		if _, _, err := fr.next(); err == nil {
			t.Fatal("got a frame without saying hello")
		}
	})
	t.Run("undecodable request body", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mEcho, ID: 1}, []byte{0, 0xc1, 0xc1})) // 0xc1 is never valid msgpack
		expectConnError(t, fr, CodeProtocol)
	})
	t.Run("trailing bytes after the body", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mEcho, ID: 1}, []byte{0, 0x80, 0x01})) // {} then 1
		expectConnError(t, fr, CodeProtocol)
	})
	t.Run("deeply nested body", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		body := []byte{0, 0x81, 0xa4, 'T', 'e', 'x', 't'}
		for range 10000 {
			body = append(body, 0x91) // array of one, nested
		}
		nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mEcho, ID: 1}, body))
		expectConnError(t, fr, CodeProtocol)
	})
	t.Run("huge collection length", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		body := []byte{0, 0x81, 0xa4, 'D', 'a', 't', 'a', 0xdd, 0xff, 0xff, 0xff, 0xff} // array of 4 billion
		nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mEcho, ID: 1}, body))
		expectConnError(t, fr, CodeProtocol)
	})
	t.Run("data for unknown streams", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		// Data for a stream that does not exist (it may have just ended) is
		// ignored; the connection stays and answers a request error.
		for i := range 100 {
			nc.Write(appendFrame(nil, Header{Type: FrameStreamData, ID: 99}, []byte{byte(i)}))
		}
		nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: 777, ID: 2}, []byte{0}))
		h, _, err := fr.next()
		if err != nil || h.Type != FrameError || h.ID != 2 {
			t.Fatalf("got %v %v", h, err)
		}
	})
	t.Run("duplicate call id", func(t *testing.T) {
		nc, fr := rawClient(t, addr, true)
		nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mBlock, ID: 5}, []byte{0}))
		<-cs.started
		nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mBlock, ID: 5}, []byte{0}))
		expectConnError(t, fr, CodeProtocol)
	})
	t.Run("bad credit and flags", func(t *testing.T) {
		for _, h := range []Header{
			{Type: FrameCredit, ID: 1, Length: 0},
			{Type: FrameRequest, ID: 1, Method: 1, Flags: 0x80},
			{Type: FrameRequest, ID: 0, Method: 1},
			{Type: FrameHelloAck},
			{Type: FrameHello},
			{Type: FrameResponse, ID: 3},
		} {
			nc, fr := rawClient(t, addr, true)
			var hdr [HeaderSize]byte
			h.put(hdr[:])
			nc.Write(hdr[:])
			expectConnError(t, fr, CodeProtocol)
		}
	})
	t.Run("10000 idle connections", func(t *testing.T) {
		const total, batch = 10000, 500
		deadline := time.Now().Add(40 * time.Second)
		opened := 0
		for opened < total && time.Now().Before(deadline) {
			conns := make([]net.Conn, 0, batch)
			for range batch {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("dial after %d connections: %v", opened, err)
				}
				conns = append(conns, nc)
				opened++
			}
			for _, nc := range conns {
				nc.Close()
			}
		}
		if opened < total {
			t.Fatalf("opened only %d connections in time", opened)
		}
		// The server forgets them all.
		waitFor(t, 20*time.Second, "connections to drain", func() bool {
			cs.srv.mu.Lock()
			defer cs.srv.mu.Unlock()
			return len(cs.srv.conns) <= 2
		})
	})
	t.Run("idle connections past the handshake timeout", func(t *testing.T) {
		var conns []net.Conn
		for range 200 {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			conns = append(conns, nc)
		}
		for _, nc := range conns {
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(nc); err != nil {
				t.Fatalf("server did not close a silent connection: %v", err)
			}
		}
	})
}

func TestMaxConnsRefusesTheRest(t *testing.T) {
	cs := newCallServer(t, func(c *ServerConfig) { c.MaxConns = 5; c.HandshakeTimeout = 10 * time.Second })
	addr := startServer(t, cs.srv)
	for range 5 {
		rawClient(t, addr, true)
	}
	nc, _ := rawClient(t, addr, false)
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("6th connection not closed: %v", err)
	}
}

func TestClientSurvivesAMisbehavingServer(t *testing.T) {
	l := listen(t)
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				fr := newFrameReader(nc, 1<<20)
				if _, _, err := fr.next(); err != nil {
					return
				}
				cds := newCodecs()
				es, _ := cds.encode(helloAck{Version: 1, ClusterID: testCluster, MaxFrame: 1 << 20, MaxConcurrent: 8, Window: 4})
				nc.Write(appendFrame(nil, Header{Type: FrameHelloAck}, es.buf))
				if _, _, err := fr.next(); err != nil {
					return
				}
				var hdr [HeaderSize]byte
				Header{Length: 1 << 30, Type: FrameResponse, ID: 1}.put(hdr[:])
				nc.Write(hdr[:])
				io.Copy(io.Discard, nc)
			}()
		}
	}()
	c := newTestClient(t, l.Addr().String(), nil)
	err := c.Call(ctxTimeout(t, 5*time.Second), mEcho, &echoReq{}, nil)
	if !errors.Is(err, ErrConnClosed) || !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
}

// A client that asks for large answers and never reads them: the server
// queues at most WriteQueueBytes for it, its handlers wait, and the
// connection is closed once a write makes no progress for WriteTimeout.
func TestClientThatNeverReadsIsCutOff(t *testing.T) {
	cs := newCallServer(t, func(c *ServerConfig) {
		c.WriteTimeout = 300 * time.Millisecond
		c.WriteQueueBytes = 256 << 10
	})
	addr := startServer(t, cs.srv)
	nc, _ := rawClient(t, addr, true)
	cds := newCodecs()
	es, _ := cds.encode(&echoReq{N: 512 << 10})
	body := append([]byte{0}, es.buf...)
	for i := range 64 { // 32 MiB of answers asked for
		if _, err := nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mBig, ID: uint64(i + 1)}, body)); err != nil {
			break
		}
	}
	waitFor(t, 10*time.Second, "the server to drop the connection", func() bool {
		cs.srv.mu.Lock()
		defer cs.srv.mu.Unlock()
		return len(cs.srv.conns) == 0
	})
	// Well-behaved clients are served.
	c := newTestClient(t, addr, nil)
	if err := c.Call(ctxTimeout(t, 5*time.Second), mEcho, &echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}

// checkedReq refuses, before decoding, any body longer than 16 bytes.
type checkedReq struct{ Data []byte }

func (*checkedReq) CheckBody(body []byte) error {
	if len(body) > 16 {
		return fmt.Errorf("body of %d bytes exceeds 16", len(body))
	}
	return nil
}

var _ BodyChecker = (*checkedReq)(nil)

// A request type implementing BodyChecker is vetted before decoding: a
// refused body never reaches the handler, and the peer is cut off with a
// protocol error. (rpc/peer relies on it to count a batch's messages.)
func TestBodyCheckerRefusesBeforeDecoding(t *testing.T) {
	srv := newTestServer(t, nil)
	var handled atomic.Int64
	if err := Handle(srv, mEcho, "checked", func(ctx context.Context, req *checkedReq) (*struct{}, error) {
		handled.Add(1)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, srv)
	c := newTestClient(t, addr, nil)
	if err := c.Call(ctxTimeout(t, 5*time.Second), mEcho, &checkedReq{Data: []byte("ok")}, nil); err != nil {
		t.Fatalf("a body the check accepts: %v", err)
	}
	if handled.Load() != 1 {
		t.Fatalf("handled %d calls, want 1", handled.Load())
	}

	nc, fr := rawClient(t, addr, true)
	es, err := newCodecs().encode(&checkedReq{Data: make([]byte, 100)})
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte{0}, es.buf...) // no deadline, then the request
	nc.Write(appendFrame(nil, Header{Type: FrameRequest, Method: mEcho, ID: 1}, body))
	expectConnError(t, fr, CodeProtocol)
	if handled.Load() != 1 {
		t.Fatalf("a refused body reached the handler (%d calls)", handled.Load())
	}
}
