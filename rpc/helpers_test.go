package rpc

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

const testCluster = "test-cluster"

// testLogger logs to stderr when LOCKD_RPC_LOG is set (e.g. "debug").
func testLogger(t testing.TB, name string) hclog.Logger {
	lvl := os.Getenv("LOCKD_RPC_LOG")
	if lvl == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(lvl), Output: os.Stderr})
}

// listen returns a listener on a free loopback port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startServer serves srv on a loopback port until the test ends.
func startServer(t testing.TB, srv *Server) string {
	t.Helper()
	l := listen(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

func newTestServer(t testing.TB, mod func(*ServerConfig)) *Server {
	t.Helper()
	cfg := ServerConfig{ClusterID: testCluster, Name: "test-server", Logger: testLogger(t, "server")}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func newTestClient(t testing.TB, addr string, mod func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{ClusterID: testCluster, Name: "test-client", Logger: testLogger(t, "client")}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not a wait for a condition
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Test methods.
const (
	mEcho Method = iota + 1
	mFail
	mBlock
	mSleepCtx
	mPanic
	mCount
	mBig
)

type echoReq struct {
	Text string
	Data []byte
	N    int
}

type echoResp struct {
	Text string
	Data []byte
	N    int
}

var errTestUser = errors.New("user error for tests")
