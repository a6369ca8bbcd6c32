package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// testTTL is the TTL of sessions meant to expire quickly; liveTTL of
// sessions whose keepalives a test watches (long enough that a loaded
// machine does not expire them spuriously).
const (
	testTTL = 300 * time.Millisecond
	liveTTL = 600 * time.Millisecond
)

func isDone(s *Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

func keepalives(fc *fakeCluster) int64 {
	var n int64
	for _, node := range fc.nodes {
		n += node.keepalives.Load()
	}
	return n
}

func TestSessionCreateAndKeepalive(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	s, err := c.NewSession(ctx, WithTTL(liveTTL), WithLockDelay(0), WithName("worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID() == 0 || s.TTL() != liveTTL || s.LockDelay() != 0 || s.Name() != "worker-1" {
		t.Errorf("session %s ttl %v lock-delay %v name %q", s.ID(), s.TTL(), s.LockDelay(), s.Name())
	}
	info, err := c.SessionInfo(ctx, s.ID())
	if err != nil || info.Session.ClientID != c.ID() {
		t.Errorf("session info %+v, %v; want client id %x (sessions are created on the primary lane)", info, err, c.ID())
	}
	list, err := c.Sessions(ctx, WithStale())
	if err != nil || len(list.Sessions) != 1 || list.Sessions[0].ID != s.ID() || list.Sessions[0].Name != "worker-1" {
		t.Errorf("Sessions: %+v, %v", list, err)
	}
	// Keepalives every TTL/3 keep it alive well past its TTL.
	start := time.Now()
	waitFor(t, 5*time.Second, "2 TTLs with keepalives", func() bool { return time.Since(start) > 2*liveTTL && keepalives(fc) >= 4 })
	if isDone(s) {
		t.Fatalf("session ended: %v", s.Err())
	}
	if s.Err() != nil {
		t.Fatalf("live session has Err %v", s.Err())
	}
}

// A node that fails keepalives is left for the next one within the TTL.
func TestSessionKeepaliveMovesToAnotherNode(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, _ := newTestClient(t, fc.addrs(), nil)
	s, err := c.NewSession(testCtx(t), WithTTL(liveTTL))
	if err != nil {
		t.Fatal(err)
	}
	fc.nodes[0].set(func(n *fakeNode) { n.keepaliveErr = api.Errorf(api.CodeUnavailable, "no leader") })
	start := time.Now()
	waitFor(t, 5*time.Second, "keepalives on the second node for 2 TTLs", func() bool {
		return time.Since(start) > 2*liveTTL && fc.nodes[1].keepalives.Load() >= 3
	})
	if isDone(s) {
		t.Fatalf("session lost although a node kept answering: %v", s.Err())
	}
}

// Failed keepalives are retried quickly (within ~200 ms), not at the next
// TTL/3.
func TestSessionKeepaliveRetriesQuickly(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	s, err := c.NewSession(testCtx(t), WithTTL(6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	fc.nodes[0].set(func(n *fakeNode) { n.keepaliveErr = api.Errorf(api.CodeUnavailable, "no leader") })
	// Keepalives are due every 2 s; after the first fails, the next 4
	// follow within ≤ 50+100+200+200 ms.
	waitFor(t, 5*time.Second, "the first keepalive", func() bool { return fc.nodes[0].keepalives.Load() >= 1 })
	start := time.Now()
	waitFor(t, 5*time.Second, "4 more keepalive attempts", func() bool { return fc.nodes[0].keepalives.Load() >= 5 })
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("4 keepalive retries took %v; failures should be retried within ~200 ms", d)
	}
	fc.nodes[0].set(func(n *fakeNode) { n.keepaliveErr = nil })
	if isDone(s) {
		t.Fatalf("session lost: %v", s.Err())
	}
}

func TestSessionLostWhenTheServerForgetsIt(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	s, err := c.NewSession(testCtx(t), WithTTL(testTTL))
	if err != nil {
		t.Fatal(err)
	}
	fc.expire(s.ID())
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the server forgot the session")
	}
	err = s.Err()
	if !errors.Is(err, ErrSessionLost) || !errors.Is(err, api.ErrSessionNotFound) {
		t.Fatalf("Err %v; want ErrSessionLost and api.ErrSessionNotFound", err)
	}
	if !strings.Contains(err.Error(), "expired or destroyed") {
		t.Errorf("Err %q lost the server's message", err)
	}
}

// With no keepalive getting through, the session is given up once its TTL
// has passed since the last success was sent — and not before.
func TestSessionLostWhenTTLPassesWithoutKeepalive(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, _ := newTestClient(t, fc.addrs(), nil)
	start := time.Now()
	s, err := c.NewSession(testCtx(t), WithTTL(testTTL))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fc.nodes {
		n.set(func(n *fakeNode) { n.keepaliveErr = api.Errorf(api.CodeUnavailable, "no leader") })
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the TTL passed without keepalives")
	}
	if d := time.Since(start); d < testTTL {
		t.Errorf("session given up after %v, before its TTL %v", d, testTTL)
	}
	if err := s.Err(); !errors.Is(err, ErrSessionLost) || !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("Err %v; want ErrSessionLost and ErrSessionExpired", err)
	}
	// Calls on a lost session fail with its loss, without a round trip.
	if err := s.Mutex("m").TryLock(testCtx(t)); !errors.Is(err, ErrSessionLost) {
		t.Errorf("TryLock on a lost session: %v", err)
	}
}

func TestSessionCloseDestroysIt(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	s, err := c.NewSession(ctx, WithTTL(testTTL))
	if err != nil {
		t.Fatal(err)
	}
	m := s.Mutex("m")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !isDone(s) || !errors.Is(s.Err(), ErrSessionClosed) || errors.Is(s.Err(), ErrSessionLost) {
		t.Errorf("after Close: done %v, Err %v", isDone(s), s.Err())
	}
	select {
	case <-m.Lost():
	default:
		t.Error("the lock's Lost channel is open after its session closed")
	}
	if _, err := c.SessionInfo(ctx, s.ID()); !errors.Is(err, api.ErrSessionNotFound) {
		t.Errorf("session after Close: %v", err)
	}
	locks, err := c.Locks(ctx, "")
	if err != nil || len(locks.Locks) != 0 && len(locks.Locks[0].Holders) != 0 {
		t.Errorf("locks after Close: %+v, %v", locks, err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSessionResume(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c1, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	s1, err := c1.NewSession(ctx, WithTTL(liveTTL), WithName("cli"))
	if err != nil {
		t.Fatal(err)
	}
	s1.Orphan()
	if !errors.Is(s1.Err(), ErrSessionClosed) {
		t.Errorf("orphaned session Err %v", s1.Err())
	}
	c2, _ := newTestClient(t, fc.addrs(), nil)
	s2, err := c2.NewSession(ctx, WithSessionID(s1.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if s2.ID() != s1.ID() || s2.TTL() != liveTTL || s2.Name() != "cli" {
		t.Errorf("resumed session %s ttl %v name %q", s2.ID(), s2.TTL(), s2.Name())
	}
	start, before := time.Now(), keepalives(fc)
	waitFor(t, 5*time.Second, "keepalives of the resumed session", func() bool {
		return time.Since(start) > 2*liveTTL && keepalives(fc) >= before+3
	})
	if isDone(s2) {
		t.Fatalf("resumed session lost: %v", s2.Err())
	}
	if _, err := c2.NewSession(ctx, WithSessionID(session.ID(999999))); !errors.Is(err, api.ErrSessionNotFound) {
		t.Errorf("resuming an unknown session: %v", err)
	}
}

func TestClientCloseEndsSessions(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	s, err := c.NewSession(testCtx(t), WithTTL(testTTL))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !isDone(s) || !errors.Is(s.Err(), ErrSessionLost) || !errors.Is(s.Err(), ErrClosed) {
		t.Errorf("session after client Close: done %v, Err %v", isDone(s), s.Err())
	}
	if _, err := c.NewSession(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("NewSession after Close: %v", err)
	}
}

func TestSessionOptionsChecked(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	if _, err := c.NewSession(ctx, WithTTL(-time.Second)); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("negative TTL: %v", err)
	}
	if _, err := c.NewSession(ctx, WithName(strings.Repeat("x", 300))); !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("long name: %v", err)
	}
	if n := fc.nodes[0].calls.Load(); n != 0 {
		t.Errorf("%d calls reached the server for refused options", n)
	}
}

// Any call naming the session that hears "session not found" ends it at
// once, without waiting for the next keepalive.
func TestSessionNotFoundFromAnyCallEndsTheSession(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	s, err := c.NewSession(testCtx(t), WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	fc.expire(s.ID())
	if _, err := c.KV().Put(testCtx(t), "svc/a", []byte("x"), WithLease(s)); !errors.Is(err, api.ErrSessionNotFound) {
		t.Fatalf("Put with an expired lease: %v", err)
	}
	if !isDone(s) || !errors.Is(s.Err(), api.ErrSessionNotFound) {
		t.Errorf("after the Put: done %v, Err %v", isDone(s), s.Err())
	}
}
