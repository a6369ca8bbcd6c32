package rpc

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// logBuf collects log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func bufLogger(name string, w *logBuf) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: w})
}

func TestHandshakeRefusesAnotherCluster(t *testing.T) {
	var slog, clog logBuf
	cs := newCallServer(t, func(c *ServerConfig) { c.Logger = bufLogger("server", &slog) })
	addr := startServer(t, cs.srv)
	c := newTestClient(t, addr, func(c *ClientConfig) { c.ClusterID = "other"; c.Logger = bufLogger("client", &clog) })
	err := c.Call(ctxTimeout(t, 5*time.Second), mEcho, &echoReq{}, nil)
	if !errors.Is(err, ErrClusterMismatch) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want cluster mismatch", err)
	}
	for _, want := range []string{`"other"`, `"test-cluster"`, addr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	waitFor(t, 5*time.Second, "log lines", func() bool {
		return strings.Contains(slog.String(), "rpc connection refused") && strings.Contains(clog.String(), "refused the connection")
	})
	if !strings.Contains(slog.String(), "cluster") {
		t.Errorf("server log does not say why: %s", slog.String())
	}
}

func TestHandshakeRefusesUnknownVersion(t *testing.T) {
	var slog logBuf
	cs := newCallServer(t, func(c *ServerConfig) { c.Logger = bufLogger("server", &slog) })
	addr := startServer(t, cs.srv)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cds := newCodecs()
	es, _ := cds.encode(hello{Magic: protocolMagic, MinVersion: 7, MaxVersion: 9, ClusterID: testCluster, MaxFrame: 1 << 20, Window: 4})
	if _, err := nc.Write(appendFrame(nil, Header{Type: FrameHello}, es.buf)); err != nil {
		t.Fatal(err)
	}
	fr := newFrameReader(nc, 1<<20)
	_, err = readHelloAck(fr, newDecoder(cds.h), defaultErrorTable(), addr, testCluster)
	if !errors.Is(err, ErrVersionMismatch) || !strings.Contains(err.Error(), "7..9") {
		t.Fatalf("got %v, want version mismatch naming 7..9", err)
	}
	waitFor(t, 5*time.Second, "server log", func() bool { return strings.Contains(slog.String(), "protocol versions 7..9") })
}

func TestHandshakeChecks(t *testing.T) {
	good := hello{Magic: protocolMagic, MinVersion: 1, MaxVersion: 1, ClusterID: "c", MaxFrame: 1 << 20, Window: 8}
	cases := []struct {
		name string
		mod  func(*hello)
		want error
	}{
		{"ok", func(*hello) {}, nil},
		{"newer client overlapping", func(h *hello) { h.MaxVersion = 5 }, nil},
		{"magic", func(h *hello) { h.Magic = "http" }, ErrHandshake},
		{"too new", func(h *hello) { h.MinVersion, h.MaxVersion = 2, 3 }, ErrVersionMismatch},
		{"inverted", func(h *hello) { h.MinVersion, h.MaxVersion = 1, 0 }, ErrVersionMismatch},
		{"cluster", func(h *hello) { h.ClusterID = "d" }, ErrClusterMismatch},
		{"tiny frame", func(h *hello) { h.MaxFrame = 10 }, ErrHandshake},
		{"no window", func(h *hello) { h.Window = 0 }, ErrHandshake},
		{"long name", func(h *hello) { h.Name = strings.Repeat("x", 300) }, ErrHandshake},
	}
	cds := newCodecs()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := good
			tc.mod(&h)
			es, _ := cds.encode(h)
			fr := newFrameReader(bytes.NewReader(appendFrame(nil, Header{Type: FrameHello}, es.buf)), DefaultMaxFrameSize)
			_, v, err := readHello(fr, newDecoder(cds.h), serverPolicy{clusterID: "c"})
			if tc.want == nil {
				if err != nil || v != 1 {
					t.Fatalf("got %v, version %d", err, v)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// The first frame must be a hello.
	fr := newFrameReader(bytes.NewReader(appendFrame(nil, Header{Type: FrameRequest, ID: 1, Method: 1}, []byte{0})), DefaultMaxFrameSize)
	if _, _, err := readHello(fr, newDecoder(cds.h), serverPolicy{}); !errors.Is(err, ErrHandshake) {
		t.Fatalf("request first: %v", err)
	}
}

func TestReconnectWithBackoff(t *testing.T) {
	// Reserve a port, then leave it closed: dials are refused.
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	c := newTestClient(t, addr, func(c *ClientConfig) {
		c.PoolSize = 1
		c.BackoffMin = 20 * time.Millisecond
		c.BackoffMax = 80 * time.Millisecond
		c.Rand = rand.New(rand.NewSource(42))
	})
	ctx := ctxTimeout(t, 10*time.Second)
	err := c.Call(ctx, mEcho, &echoReq{}, nil)
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, ErrUnavailable) || de.Attempt != 1 || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("first call: %v", err)
	}
	if de.RetryIn < 10*time.Millisecond || de.RetryIn > 20*time.Millisecond {
		t.Fatalf("first backoff %v, want in [10ms, 20ms]", de.RetryIn)
	}
	// During the backoff calls fail at once without dialling.
	err = c.Call(ctx, mEcho, &echoReq{}, nil)
	if !errors.As(err, &de) || de.Attempt != 1 {
		t.Fatalf("call during backoff: %v", err)
	}
	// Backoff grows with failures, capped.
	var last time.Duration
	for attempt := 2; attempt <= 5; attempt++ {
		waitFor(t, 5*time.Second, "backoff to pass", func() bool {
			err = c.Call(ctx, mEcho, &echoReq{}, nil)
			return errors.As(err, &de) && de.Attempt == attempt
		})
		last = de.RetryIn
	}
	if last < 40*time.Millisecond || last > 80*time.Millisecond {
		t.Fatalf("capped backoff %v, want in [40ms, 80ms]", last)
	}
	// The server comes up on that address: the client reconnects.
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	cs := newCallServer(t, nil)
	go cs.srv.Serve(l2)
	t.Cleanup(func() { cs.srv.Close() })
	waitFor(t, 5*time.Second, "reconnect", func() bool { return c.Call(ctx, mEcho, &echoReq{}, nil) == nil })
	// A server restart: the connection dies, the next call redials.
	cc, _ := c.conn(ctx)
	cc.close(errors.New("test: cut"))
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); err != nil {
		t.Fatalf("after the connection was cut: %v", err)
	}
}

func TestBackoffIsSeedable(t *testing.T) {
	draw := func() []time.Duration {
		c, err := NewClient("127.0.0.1:1", ClientConfig{Rand: rand.New(rand.NewSource(7))})
		if err != nil {
			t.Fatal(err)
		}
		var out []time.Duration
		for i := 1; i < 10; i++ {
			out = append(out, c.backoffLocked(i))
		}
		return out
	}
	a, b := draw(), draw()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different backoff: %v vs %v", a, b)
		}
		if max := min(DefaultBackoffMin<<i, DefaultBackoffMax); a[i] > max || a[i] < max/2 {
			t.Fatalf("backoff %d = %v outside [%v, %v]", i+1, a[i], max/2, max)
		}
	}
}

func TestDialTimeout(t *testing.T) {
	// A listener that never accepts past the backlog would be racy; instead
	// the dial function blocks until its context ends.
	c := newTestClient(t, "127.0.0.1:9", func(c *ClientConfig) {
		c.DialTimeout = 50 * time.Millisecond
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
	})
	start := time.Now()
	err := c.Call(ctxTimeout(t, 10*time.Second), mEcho, &echoReq{}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("dial took %v", d)
	}
}

func TestUnnamedClientAdmittedOnlyWhenAllowed(t *testing.T) {
	for _, allow := range []bool{false, true} {
		srv, err := NewServer(ServerConfig{ClusterID: "prod", AcceptUnnamedClients: allow})
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(l) }()
		for _, cluster := range []string{"", "other"} {
			c, err := NewClient(l.Addr().String(), ClientConfig{ClusterID: cluster})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = c.Call(ctx, 999, &struct{}{}, &struct{}{})
			cancel()
			_ = c.Close()
			admitted := errors.Is(err, ErrUnknownMethod) // the handshake passed
			if want := allow && cluster == ""; admitted != want {
				t.Errorf("allow=%v cluster=%q: err %v; admitted %v, want %v", allow, cluster, err, admitted, want)
			}
		}
		_ = srv.Close()
	}
}
