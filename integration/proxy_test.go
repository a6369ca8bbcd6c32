package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a fault-injecting TCP proxy for one link: everything the
// dialing side sends goes "forward" to the target, everything the target
// answers goes "back". Faults apply to the connections already open and
// to new ones:
//
//   - Block(forward, back): bytes in a blocked direction are read and
//     dropped (a blackhole: nothing is closed, so the sender sees a
//     silent network, as in a real partition, not a reset).
//   - Cut: existing connections are closed and new ones are accepted and
//     closed at once (a crashed host's RST).
//   - Delay: every chunk waits this long before it is passed on.
//
// A connection that lost bytes to a blackhole is closed as soon as its
// link heals: TCP never delivers a stream with a hole in it, so resuming
// one would show the nodes a corruption no real network produces.
type Proxy struct {
	name   string
	ln     net.Listener
	target atomic.Value // string

	blockFwd, blockBack, cut atomic.Bool
	delay                    atomic.Int64 // nanoseconds

	mu    sync.Mutex // protects conns and closed
	conns map[*proxyConn]struct{}
	done  bool

	wg sync.WaitGroup // the accept loop and every connection's copiers
}

type proxyConn struct {
	client, server net.Conn
	// dropped is set when a blackhole ate bytes of this stream.
	dropped atomic.Bool
	once    sync.Once
}

func (pc *proxyConn) close() {
	pc.once.Do(func() {
		_ = pc.client.Close()
		_ = pc.server.Close()
	})
}

// NewProxy listens on 127.0.0.1 (a free port) and forwards to target.
func NewProxy(name, target string) (*Proxy, error) {
	var ln net.Listener
	var skipped []net.Listener // held until a port not handed out by freeAddr comes up
	defer func() {
		for _, l := range skipped {
			l.Close()
		}
	}()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("proxy %s: listening on 127.0.0.1: %w", name, err)
		}
		if _, taken := handedOut.Load(l.Addr().String()); !taken {
			ln = l
			break
		}
		skipped = append(skipped, l)
	}
	p := &Proxy{name: name, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.target.Store(target)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where to dial to go through the proxy.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Name names the link ("n1→n2", "client→n3").
func (p *Proxy) Name() string { return p.name }

// SetTarget changes where new connections go (a node restarted on
// another port).
func (p *Proxy) SetTarget(addr string) { p.target.Store(addr) }

// Block blackholes the given directions (true = drop); Block(false,false)
// heals them.
func (p *Proxy) Block(forward, back bool) {
	p.blockFwd.Store(forward)
	p.blockBack.Store(back)
	if !forward && !back {
		p.closeDropped()
	}
}

// Cut closes every connection and refuses new ones until Heal.
func (p *Proxy) Cut() {
	p.cut.Store(true)
	p.mu.Lock()
	for pc := range p.conns {
		pc.close()
	}
	p.mu.Unlock()
}

// SetDelay delays every chunk in both directions by d (0: none).
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Heal lifts every fault.
func (p *Proxy) Heal() {
	p.cut.Store(false)
	p.SetDelay(0)
	p.Block(false, false)
}

// Faulty reports whether any fault is set.
func (p *Proxy) Faulty() bool {
	return p.cut.Load() || p.blockFwd.Load() || p.blockBack.Load() || p.delay.Load() != 0
}

func (p *Proxy) closeDropped() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		if pc.dropped.Load() {
			pc.close()
		}
	}
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.done = true
	for pc := range p.conns {
		pc.close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if p.cut.Load() {
			_ = c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target.Load().(string), time.Second)
		if err != nil {
			_ = c.Close() // the target is down: the dialer sees a reset
			continue
		}
		pc := &proxyConn{client: c, server: s}
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			pc.close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.copy(pc, c, s, &p.blockFwd)
		go p.copy(pc, s, c, &p.blockBack)
	}
}

// copy moves one direction of pc until either side closes.
func (p *Proxy) copy(pc *proxyConn, from, to net.Conn, blocked *atomic.Bool) {
	defer p.wg.Done()
	defer func() {
		pc.close()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if d := p.delay.Load(); d > 0 {
				time.Sleep(time.Duration(d))
			}
			switch {
			case p.cut.Load():
				return
			case blocked.Load():
				pc.dropped.Store(true)
			case pc.dropped.Load():
				return // a stream with a hole must not resume
			default:
				if _, werr := to.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// Tests of the proxy itself: the faults must do what the nemesis assumes.

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := NewProxy("test", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func roundTrip(c net.Conn, msg string, wait time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

func TestProxyForwardsBothWays(t *testing.T) {
	p := newTestProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := string(bytes.Repeat([]byte("0123456789"), 20000))
	got, err := roundTrip(c, big, 10*time.Second)
	if err != nil || got != big {
		t.Fatalf("round trip of %d bytes: got %d bytes, err %v", len(big), len(got), err)
	}
}

func TestProxyBlackholeDropsSilentlyAndClosesOnHeal(t *testing.T) {
	p := newTestProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "ping", 5*time.Second); err != nil || got != "ping" {
		t.Fatalf("before the fault: %q %v", got, err)
	}
	p.Block(true, false) // forward only: the echo never sees the bytes
	_, err = roundTrip(c, "lost", 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a blackholed link must look silent (a timeout), got %v", err)
	}
	p.Block(false, false)
	// The stream lost bytes, so the proxy closes it rather than resume it.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("x"))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection that lost bytes was resumed after the heal")
	}
	// New connections work again.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, "again", 5*time.Second); err != nil || got != "again" {
		t.Fatalf("after the heal: %q %v", got, err)
	}
}

func TestProxyOneWayBackBlocksAnswersOnly(t *testing.T) {
	target := echoServer(t)
	p := newTestProxy(t, target)
	// Count what reaches the target through a second proxy in front of
	// it: the forward direction must still flow.
	var reached atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			reached.Add(int64(n))
			if err != nil {
				return
			}
			_, _ = c.Write(buf[:n])
		}
	}()
	p.SetTarget(ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.Block(false, true)
	if _, err := roundTrip(c, "hello", 300*time.Millisecond); err == nil {
		t.Fatal("an answer crossed a link blocked in the back direction")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for reached.Load() < 5 {
		if ctx.Err() != nil {
			t.Fatalf("the forward direction must still flow: %d bytes reached the target", reached.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxyCutClosesAndRefuses(t *testing.T) {
	p := newTestProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := roundTrip(c, "ping", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a cut must close the open connection, read gave %v", err)
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
		if _, rerr := c2.Read(make([]byte, 1)); rerr == nil {
			t.Fatal("a cut link accepted a new connection and kept it")
		}
		c2.Close()
	}
	p.Heal()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, "back", 5*time.Second); err != nil || got != "back" {
		t.Fatalf("after the heal: %q %v", got, err)
	}
}

func TestProxyDelay(t *testing.T) {
	p := newTestProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const d = 100 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	if got, err := roundTrip(c, "slow", 10*time.Second); err != nil || got != "slow" {
		t.Fatalf("delayed round trip: %q %v", got, err)
	}
	// A lower bound only: the delay is at least what was asked, both ways.
	if el := time.Since(start); el < 2*d {
		t.Fatalf("round trip took %v through a %v delay each way", el, d)
	}
}
