package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
)

// newSessions makes n sessions with a TTL long enough not to expire under
// a loaded test machine; tests of expiry use testTTL themselves.
func newSessions(t *testing.T, c *Client, n int) []*Session {
	return newSessionsTTL(t, c, n, 2*time.Second)
}

func newSessionsTTL(t *testing.T, c *Client, n int, ttl time.Duration) []*Session {
	t.Helper()
	var out []*Session
	for range n {
		s, err := c.NewSession(testCtx(t), WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func waiters(t *testing.T, c *Client, name string) int {
	resp, err := c.Locks(testCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range resp.Locks {
		if l.Name == name {
			return len(l.Waiters)
		}
	}
	return 0
}

func TestMutexLockTryLockUnlock(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 2)
	a, b := ss[0].Mutex("db"), ss[1].Mutex("db")
	if a.IsLocked() || a.Token() != 0 || !closed(a.Lost()) {
		t.Fatal("a fresh Mutex claims a grant")
	}
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	t1 := a.Token()
	if t1 == 0 || !a.IsLocked() || closed(a.Lost()) {
		t.Fatalf("after Lock: token %d, locked %v", t1, a.IsLocked())
	}
	if g, ok := a.Grant(); !ok || g.Session != ss[0].ID() || g.Mode != api.Exclusive {
		t.Errorf("grant %+v", g)
	}
	// Locking again returns the same grant.
	if err := a.Lock(ctx); err != nil || a.Token() != t1 {
		t.Errorf("re-Lock: %v, token %d (was %d)", err, a.Token(), t1)
	}
	err := b.TryLock(ctx)
	var ae *api.Error
	if !errors.Is(err, api.ErrLockHeld) || !errors.As(err, &ae) || !strings.Contains(ae.Message, "held by session") {
		t.Fatalf("TryLock of a held lock: %v; want api.ErrLockHeld with the server's message", err)
	}
	if chk, err := c.CheckToken(ctx, "db", t1); err != nil || !chk.Current {
		t.Errorf("CheckToken of the holder: %+v, %v", chk, err)
	}
	lost := a.Lost()
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if !closed(lost) || a.IsLocked() || a.Token() != 0 {
		t.Errorf("after Unlock: lost closed %v, locked %v", closed(lost), a.IsLocked())
	}
	if err := a.Unlock(ctx); !errors.Is(err, ErrNotLocked) {
		t.Errorf("second Unlock: %v", err)
	}
	if err := b.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Token() <= t1 {
		t.Errorf("next grant's token %d is not above %d", b.Token(), t1)
	}
	if chk, err := c.CheckToken(ctx, "db", t1); err != nil || chk.Current {
		t.Errorf("CheckToken of the old token: %+v, %v", chk, err)
	}
}

func TestTryLockReportsLockDelay(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	s := newSessions(t, c, 1)[0]
	msg := `lock "db" is in lock-delay until 2026-01-01T00:00:00Z after its holder's session expired; retry then, or acquire with --wait`
	fc.nodes[0].set(func(n *fakeNode) {
		n.failNext[api.MethodLockAcquire] = &failN{n: 1, err: api.Errorf(api.CodeLockDelay, "%s", msg)}
	})
	err := s.Mutex("db").TryLock(testCtx(t))
	var ae *api.Error
	if !errors.Is(err, api.ErrLockDelay) || !errors.As(err, &ae) || ae.Message != msg {
		t.Fatalf("TryLock in lock-delay: %v", err)
	}
}

func TestMutexLockWaitsInFIFOOrder(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 3)
	ms := []*Mutex{ss[0].Mutex("q"), ss[1].Mutex("q"), ss[2].Mutex("q")}
	if err := ms[0].Lock(ctx); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 2)
	for i := 1; i <= 2; i++ {
		go func() {
			if err := ms[i].Lock(ctx); err != nil {
				t.Errorf("Lock %d: %v", i, err)
			}
			got <- i
		}()
		waitFor(t, 5*time.Second, "the waiter to queue", func() bool { return waiters(t, c, "q") == i })
	}
	tokens := []uint64{ms[0].Token()}
	for want := 1; want <= 2; want++ {
		if err := ms[want-1].Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if i := <-got; i != want {
			t.Fatalf("session %d got the lock before %d", i, want)
		}
		tokens = append(tokens, ms[want].Token())
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Errorf("tokens %v do not increase", tokens)
		}
	}
}

func TestLockGivesUpWithItsContextAndWithdrawsTheWait(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ss := newSessions(t, c, 2)
	if err := ss[0].Mutex("m").Lock(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	m := ss[1].Mutex("m")
	if err := m.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock past its deadline: %v", err)
	}
	if m.IsLocked() {
		t.Error("IsLocked after a failed Lock")
	}
	waitFor(t, 5*time.Second, "the wait to be withdrawn", func() bool { return waiters(t, c, "m") == 0 })
}

// etcd#22082: an Unlock of an old grant must not release a newer one.
func TestStaleUnlockCannotReleaseANewerGrant(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 2)
	old := ss[0].Mutex("m")
	if err := old.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	oldGrant, _ := old.Grant()
	// The grant is taken away (say, an operator or an expiry) and the
	// same session acquires the lock again through another handle.
	fc.releaseAll("m")
	again := ss[0].Mutex("m")
	if err := again.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if again.Token() <= oldGrant.Token {
		t.Fatalf("new token %d not above the old %d", again.Token(), oldGrant.Token)
	}
	// The old handle's Unlock (late, or retried) names the old token.
	err := old.Unlock(ctx)
	if !errors.Is(err, api.ErrStaleToken) {
		t.Fatalf("stale Unlock: %v; want api.ErrStaleToken", err)
	}
	if old.IsLocked() || !closed(old.Lost()) {
		t.Error("the stale handle still claims the lock")
	}
	chk, err := c.CheckToken(ctx, "m", again.Token())
	if err != nil || !chk.Current {
		t.Fatalf("the newer grant was released by a stale Unlock: %+v, %v", chk, err)
	}
	// Another session is still shut out.
	if err := ss[1].Mutex("m").TryLock(ctx); !errors.Is(err, api.ErrLockHeld) {
		t.Errorf("TryLock by another session: %v", err)
	}
}

// etcd#11456: a Lock must never return success once its session is gone,
// even when the grant and the loss cross on the wire.
func TestLockNeverSucceedsAfterSessionLoss(t *testing.T) {
	t.Run("grant arrives after the loss", func(t *testing.T) {
		fc := newFakeCluster(t, 1)
		c, _ := newTestClient(t, fc.addrs(), nil)
		s := newSessions(t, c, 1)[0]
		fc.nodes[0].set(func(n *fakeNode) {
			n.afterApply = func(ctx context.Context, method uint16) {
				if method == api.MethodLockAcquire {
					s.lose(ErrSessionExpired) // the loss lands while the grant is on its way
				}
			}
		})
		m := s.Mutex("m")
		err := m.Lock(testCtx(t))
		if err == nil || !errors.Is(err, ErrSessionLost) {
			t.Fatalf("Lock whose session was lost meanwhile: %v; want ErrSessionLost", err)
		}
		if m.IsLocked() || m.Token() != 0 || !closed(m.Lost()) {
			t.Error("the Mutex claims a grant of a lost session")
		}
	})
	t.Run("server ends the session while waiting", func(t *testing.T) {
		fc := newFakeCluster(t, 1)
		c, _ := newTestClient(t, fc.addrs(), nil)
		ss := newSessions(t, c, 2)
		if err := ss[0].Mutex("m").Lock(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- ss[1].Mutex("m").Lock(testCtx(t)) }()
		waitFor(t, 5*time.Second, "the waiter to queue", func() bool { return waiters(t, c, "m") == 1 })
		fc.expire(ss[1].ID())
		if err := <-errc; !errors.Is(err, ErrSessionLost) || !errors.Is(err, api.ErrSessionNotFound) {
			t.Fatalf("Lock of an expired session: %v", err)
		}
		if !isDone(ss[1]) {
			t.Error("the session's Done is open although the server said it ended")
		}
	})
	t.Run("keepalives stop getting through while waiting", func(t *testing.T) {
		fc := newFakeCluster(t, 1)
		c, _ := newTestClient(t, fc.addrs(), nil)
		ss := newSessionsTTL(t, c, 2, testTTL)
		if err := ss[0].Mutex("m").Lock(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- ss[1].Mutex("m").Lock(testCtx(t)) }()
		waitFor(t, 5*time.Second, "the waiter to queue", func() bool { return waiters(t, c, "m") == 1 })
		fc.nodes[0].set(func(n *fakeNode) { n.keepaliveErr = api.Errorf(api.CodeUnavailable, "partitioned") })
		if err := <-errc; !errors.Is(err, ErrSessionLost) || !errors.Is(err, ErrSessionExpired) {
			t.Fatalf("Lock of a session that expired locally: %v", err)
		}
	})
}

// etcd#6127: the holder learns that its lock is gone.
func TestLostSignalsWhenTheSessionEnds(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	s := newSessionsTTL(t, c, 1, testTTL)[0]
	m := s.Mutex("m")
	if err := m.Lock(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	lost := m.Lost()
	if closed(lost) {
		t.Fatal("Lost closed while held")
	}
	fc.expire(s.ID())
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after the session expired")
	}
	if m.IsLocked() {
		t.Error("IsLocked after the session ended")
	}
	if err := m.Unlock(testCtx(t)); !errors.Is(err, ErrSessionLost) {
		t.Errorf("Unlock after the loss: %v", err)
	}
}

func TestRWMutex(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 3)
	r1, r2, w := ss[0].RWMutex("rw"), ss[1].RWMutex("rw"), ss[2].RWMutex("rw")
	if err := r1.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.TryRLock(ctx); err != nil {
		t.Fatal(err)
	}
	if !r1.IsRLocked() || r1.IsLocked() || r1.Token() == 0 || r1.Token() == r2.Token() {
		t.Errorf("readers: tokens %d, %d", r1.Token(), r2.Token())
	}
	if err := w.TryLock(ctx); !errors.Is(err, api.ErrLockHeld) {
		t.Fatalf("writer TryLock with readers: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Lock(ctx) }()
	waitFor(t, 5*time.Second, "the writer to queue", func() bool { return waiters(t, c, "rw") == 1 })
	for _, r := range []*RWMutex{r1, r2} {
		if err := r.RUnlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !w.IsLocked() || w.Token() <= r2.Token() && w.Token() <= r1.Token() {
		t.Errorf("writer: locked %v token %d", w.IsLocked(), w.Token())
	}
	if err := r1.TryRLock(ctx); !errors.Is(err, api.ErrLockHeld) {
		t.Errorf("reader TryRLock with a writer: %v", err)
	}
	if closed(w.Lost()) {
		t.Error("writer's Lost closed while held")
	}
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSemaphore(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 3)
	sems := []*Semaphore{ss[0].Semaphore("pool", 2), ss[1].Semaphore("pool", 2), ss[2].Semaphore("pool", 2)}
	for _, sem := range sems[:2] {
		if err := sem.TryAcquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := sems[2].TryAcquire(ctx); !errors.Is(err, api.ErrLockHeld) {
		t.Fatalf("third TryAcquire of 2 slots: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- sems[2].Acquire(ctx) }()
	waitFor(t, 5*time.Second, "the third to queue", func() bool { return waiters(t, c, "pool") == 1 })
	if err := sems[0].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !sems[2].IsAcquired() || sems[0].IsAcquired() || sems[2].Name() != "pool" || sems[2].Limit() != 2 || closed(sems[2].Lost()) {
		t.Errorf("after the handover: %v %v", sems[2].IsAcquired(), sems[0].IsAcquired())
	}
	if sems[2].Token() <= sems[1].Token() {
		t.Errorf("token %d not above %d", sems[2].Token(), sems[1].Token())
	}
}

// A blocking acquire whose connection dies is sent again elsewhere, and
// still ends holding exactly one grant.
func TestLockSurvivesAConnectionDroppedWhileWaiting(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, ct := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 2)
	if err := ss[0].Mutex("m").Lock(ctx); err != nil {
		t.Fatal(err)
	}
	m := ss[1].Mutex("m")
	done := make(chan error, 1)
	go func() { done <- m.Lock(ctx) }()
	waitFor(t, 5*time.Second, "the waiter to queue", func() bool { return waiters(t, c, "m") == 1 })
	ct.cut(fc.nodes[0].addr)
	waitFor(t, 5*time.Second, "the acquire to be sent again", func() bool {
		return len(fc.writesOf(api.MethodLockAcquire)) >= 3 && waiters(t, c, "m") == 1
	})
	if err := ss[0].Mutex("m").Unlock(ctx); err == nil {
		t.Fatal("a fresh handle without a grant unlocked")
	}
	fc.releaseAll("m")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	chk, err := c.CheckToken(ctx, "m", m.Token())
	if err != nil || !chk.Current || chk.Grant.Session != ss[1].ID() {
		t.Fatalf("grant after the retried acquire: %+v, %v", chk, err)
	}
	// Attempts of one acquire share a lane (client id), each with its own seq.
	ws := fc.writesOf(api.MethodLockAcquire)
	a, b := ws[len(ws)-2], ws[len(ws)-1]
	if a.cid != b.cid || b.seq <= a.seq {
		t.Errorf("acquire attempts (%x, %d) then (%x, %d): want one lane, a fresh seq", a.cid, a.seq, b.cid, b.seq)
	}
}
