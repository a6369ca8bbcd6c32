package rpc

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// payload100 is the 100-byte request body the call benchmarks use.
var payload100 = make([]byte, 100)

type benchReq struct{ Data []byte }

func benchServer(b *testing.B) (*Client, func()) {
	srv := newTestServer(b, nil)
	if err := Handle(srv, mEcho, "echo", func(ctx context.Context, req *benchReq) (*benchReq, error) {
		return req, nil
	}); err != nil {
		b.Fatal(err)
	}
	addr := startServer(b, srv)
	c := newTestClient(b, addr, func(c *ClientConfig) { c.PoolSize = 1 })
	if err := c.Call(context.Background(), mEcho, &benchReq{Data: payload100}, nil); err != nil {
		b.Fatal(err)
	}
	return c, func() {}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkUnaryRoundTrip: one call at a time, 100-byte request and
// response. Compare with BenchmarkRawTCPPingPong.
func BenchmarkUnaryRoundTrip(b *testing.B) {
	c, _ := benchServer(b)
	ctx := context.Background()
	req := &benchReq{Data: payload100}
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var resp benchReq
		start := time.Now()
		if err := c.Call(ctx, mEcho, req, &resp); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// rawFrame is what one unary call of BenchmarkUnaryRoundTrip puts on the
// wire: a 16-byte header plus the encoded 100-byte request (~123 bytes).
const rawFrame = 128

// BenchmarkRawTCPPingPong: the floor for BenchmarkUnaryRoundTrip, a bare
// TCP echo of the same size with one goroutine on each side.
func BenchmarkRawTCPPingPong(b *testing.B) {
	l := listen(b)
	defer l.Close()
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		buf := make([]byte, rawFrame)
		for {
			if _, err := io.ReadFull(nc, buf); err != nil {
				return
			}
			if _, err := nc.Write(buf); err != nil {
				return
			}
		}
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, rawFrame)
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := nc.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(nc, buf); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkPipelined64: 64 callers share one connection, 100-byte calls.
func BenchmarkPipelined64(b *testing.B) {
	c, _ := benchServer(b)
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &benchReq{Data: payload100}
			for next.Add(1) <= int64(b.N) {
				var resp benchReq
				if err := c.Call(ctx, mEcho, req, &resp); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}
