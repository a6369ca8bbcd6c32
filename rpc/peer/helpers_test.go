package peer

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/lockd/lockd/rpc"
)

// Small copies of rpc's test helpers.

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

func listenOn(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

func newTestServer(t testing.TB) *rpc.Server {
	t.Helper()
	srv, err := rpc.NewServer(rpc.ServerConfig{ClusterID: testCluster, Name: "test-server", Logger: testLogger(t, "server")})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func newTestClient(t testing.TB, addr string, mod func(*rpc.ClientConfig)) *rpc.Client {
	t.Helper()
	cfg := rpc.ClientConfig{ClusterID: testCluster, Name: "test-client", Logger: testLogger(t, "client")}
	if mod != nil {
		mod(&cfg)
	}
	c, err := rpc.NewClient(addr, cfg)
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

func codecNewEncoder(buf *[]byte, h *codec.MsgpackHandle) *codec.Encoder {
	return codec.NewEncoderBytes(buf, h)
}

// encode encodes v as a body, the way rpc encodes requests.
func encode(t testing.TB, v any) []byte {
	t.Helper()
	var buf []byte
	if err := rpc.SafeEncode(codecNewEncoder(&buf, rpc.NewHandle()), v); err != nil {
		t.Fatal(err)
	}
	return buf
}

// bodyDecoder decodes bodies as rpc's receiving side does: into a fresh
// value, panics caught, trailing bytes an error.
type bodyDecoder struct{ dec *codec.Decoder }

func newBodyDecoder() *bodyDecoder {
	return &bodyDecoder{dec: codec.NewDecoderBytes([]byte{}, rpc.NewHandle())}
}

func (d *bodyDecoder) decode(body []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoding %T: panic: %v", v, r)
		}
	}()
	if len(body) == 0 {
		return nil
	}
	d.dec.ResetBytes(body)
	if err := d.dec.Decode(v); err != nil {
		return fmt.Errorf("decoding %T: %w", v, err)
	}
	if n := d.dec.NumBytesRead(); n != len(body) {
		return fmt.Errorf("decoding %T: %d trailing bytes after %d", v, len(body)-n, n)
	}
	return nil
}
