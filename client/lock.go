package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/lockd/lockd/api"
)

// handle is one lock name held (or not) in one mode through a session: the
// one mechanism behind Mutex, RWMutex, Semaphore and Election.
//
// Acquiring is idempotent on the server per (session, lock): asking again
// while holding returns the same grant, asking again while queued returns
// the same wait. So unlike other writes, each attempt of an acquire gets a
// fresh sequence number on its lane (spec.freshSeq): a retry is then
// answered from the lock's state rather than from a remembered answer
// that may say "queued" about a wait the server has since withdrawn
// because the first attempt's connection died; and an older attempt that
// arrives after a newer one is refused as stale, never applied.
//
// What this expects of the server: when a waiting acquire's call ends
// without the client (its connection died, its deadline passed), the
// server withdraws the wait (releasing a grant that raced the
// withdrawal) only if the client's last Seq on that lane is still the
// abandoned call's. A newer Seq on the lane means the client sent the
// acquire again and the wait (or grant) is that call's; the client never
// reuses a lane after a call it abandoned, so nothing else can advance
// it. Without this guard a late withdrawal can take back a grant the
// retry already reported as held.
type handle struct {
	s     *Session
	name  string
	mode  api.Mode
	limit int

	mu    sync.Mutex // protects grant and lost
	grant *api.Grant // nil when not held through this handle
	lost  chan struct{}
}

func newHandle(s *Session, name string, mode api.Mode, limit int) *handle {
	return &handle{s: s, name: name, mode: mode, limit: limit}
}

// acquire asks for the lock, waiting in the lock's FIFO queue if wait.
// It never reports success for a session that has ended (etcd#11456):
// a grant is kept only after checking, under the session's lock, that the
// session still lives; otherwise the session's loss is returned.
func (h *handle) acquire(ctx context.Context, wait bool) error {
	s := h.s
	if err := s.c.cfg.Limits.CheckKey("lock name", h.name); err != nil {
		return err
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("lock %q: %w", h.name, err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	req := &api.LockAcquireRequest{Name: h.name, Session: s.id, Mode: h.mode, Limit: h.limit, Wait: wait}
	resp, err := do[api.LockAcquireResponse](s.c, ctx, spec{method: api.MethodLockAcquire, write: &req.Write, freshSeq: true, blocking: wait}, req)
	if err != nil {
		s.noteErr(err)
		if serr := s.Err(); serr != nil {
			return fmt.Errorf("lock %q: %w", h.name, serr)
		}
		return err
	}
	g := resp.Grant
	if g.Session != s.id || g.Lock != h.name || g.Mode != h.mode || g.Token == 0 {
		return fmt.Errorf("lock %q: the server answered a grant of lock %q to session %s as %v with token %d: %w",
			h.name, g.Lock, g.Session, g.Mode, g.Token, api.ErrInvalid)
	}
	lost, ok := s.hold()
	if !ok {
		return fmt.Errorf("lock %q: granted with token %d, but %w", h.name, g.Token, s.Err())
	}
	h.mu.Lock()
	old := h.lost
	if h.grant != nil && h.grant.Token == g.Token {
		// Asked again while holding: the same grant, the same signal.
		old, lost = lost, old
	}
	h.grant, h.lost = &g, lost
	h.mu.Unlock()
	if old != nil {
		s.unhold(old)
	}
	return nil
}

// release gives the grant back, naming its token: the server refuses
// (api.ErrStaleToken) to release anything but that grant, so a late or
// repeated release can never free a newer grant of the same lock
// (etcd#22082).
func (h *handle) release(ctx context.Context) error {
	h.mu.Lock()
	g := h.grant
	h.mu.Unlock()
	if g == nil {
		return fmt.Errorf("lock %q: %w", h.name, ErrNotLocked)
	}
	if err := h.s.Err(); err != nil {
		// The session ended, and its locks with it.
		h.drop(g.Token)
		return fmt.Errorf("lock %q: %w", h.name, err)
	}
	req := &api.LockReleaseRequest{Name: h.name, Session: h.s.id, Token: g.Token}
	_, err := do[api.LockReleaseResponse](h.s.c, ctx, spec{method: api.MethodLockRelease, write: &req.Write}, req)
	h.s.noteErr(err)
	if err == nil || errors.Is(err, api.ErrStaleToken) || errors.Is(err, api.ErrSessionNotFound) {
		// Released now, or no longer ours to release.
		h.drop(g.Token)
	}
	return err
}

// drop forgets the grant with token, if it is still the current one, and
// signals its loss.
func (h *handle) drop(token uint64) {
	h.mu.Lock()
	var lost chan struct{}
	if h.grant != nil && h.grant.Token == token {
		lost = h.lost
		h.grant, h.lost = nil, nil
	}
	h.mu.Unlock()
	if lost != nil {
		h.s.unhold(lost)
	}
}

// current returns the grant held through this handle, if any, while the
// session lives.
func (h *handle) current() (api.Grant, bool) {
	alive := h.s.alive() // before h.mu: ending the session signals this handle's Lost channel
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.grant == nil || !alive {
		return api.Grant{}, false
	}
	return *h.grant, true
}

func (h *handle) token() uint64 {
	g, _ := h.current()
	return g.Token
}

// lostChan is closed when the current grant ends (release or the
// session's end); already closed when nothing is held.
func (h *handle) lostChan() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost != nil {
		return h.lost
	}
	return closedChan
}

var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Mutex is an exclusive lock held through a session. Lock waits in the
// lock's FIFO queue (kept by the cluster, so fairness holds across
// clients and nodes). Every grant carries a fencing token, strictly
// greater than every earlier token of the lock: pass it to the resource
// you guard, and have the resource refuse lower tokens or ask
// Client.CheckToken.
//
// The lock is held until Unlock or until the session ends; Lost (or the
// session's Done) signals the end. Mutexes of one session for one name
// share the server's grant: an Unlock through one releases it for all,
// and the others do not see it (use one Mutex per lock and session). A
// Mutex is safe for concurrent use.
type Mutex struct{ h *handle }

// Mutex returns the exclusive lock name, held through this session.
func (s *Session) Mutex(name string) *Mutex { return &Mutex{h: newHandle(s, name, api.Exclusive, 0)} }

// Name returns the lock's name.
func (m *Mutex) Name() string { return m.h.name }

// Lock acquires the lock, waiting until it is free or ctx ends. It
// returns an error wrapping ErrSessionLost if the session ended first; it
// never reports success once the session has ended. Locking a held lock
// again returns at once with the same grant.
func (m *Mutex) Lock(ctx context.Context) error { return m.h.acquire(ctx, true) }

// TryLock acquires the lock if it is free now. Otherwise it fails with
// the server's *api.Error: api.ErrLockHeld (naming the holders) or
// api.ErrLockDelay (until when).
func (m *Mutex) TryLock(ctx context.Context) error { return m.h.acquire(ctx, false) }

// Unlock releases the grant this Mutex holds, by its token: a stale Unlock
// (of a grant already gone) fails with api.ErrStaleToken and never
// releases a newer grant. Unlock without a grant fails with ErrNotLocked.
func (m *Mutex) Unlock(ctx context.Context) error { return m.h.release(ctx) }

// Token returns the fencing token of the current grant, 0 if not held.
func (m *Mutex) Token() uint64 { return m.h.token() }

// Grant returns the current grant, if held.
func (m *Mutex) Grant() (api.Grant, bool) { return m.h.current() }

// IsLocked reports whether this Mutex holds the lock as far as the client
// knows (a grant, and the session alive).
func (m *Mutex) IsLocked() bool {
	_, ok := m.h.current()
	return ok
}

// Lost returns a channel closed when the current grant ends: Unlock, or
// the session's end (lost or closed) — the signal to stop acting as the
// holder (etcd#6127). Closed already if nothing is held; call it after
// Lock.
func (m *Mutex) Lost() <-chan struct{} { return m.h.lostChan() }

// RWMutex is a read/write lock held through a session: any number of
// sessions may hold it shared (RLock), or one exclusively (Lock). A
// session holds it in one mode at a time: release before asking in the
// other (the server refuses otherwise with api.ErrInvalid).
type RWMutex struct {
	w, r *handle
}

// RWMutex returns the read/write lock name, held through this session.
func (s *Session) RWMutex(name string) *RWMutex {
	return &RWMutex{w: newHandle(s, name, api.Exclusive, 0), r: newHandle(s, name, api.Shared, 0)}
}

// Name returns the lock's name.
func (rw *RWMutex) Name() string { return rw.w.name }

// Lock acquires the lock exclusively, waiting (FIFO) until ctx ends.
func (rw *RWMutex) Lock(ctx context.Context) error { return rw.w.acquire(ctx, true) }

// TryLock acquires the lock exclusively if that is possible now.
func (rw *RWMutex) TryLock(ctx context.Context) error { return rw.w.acquire(ctx, false) }

// Unlock releases the exclusive grant.
func (rw *RWMutex) Unlock(ctx context.Context) error { return rw.w.release(ctx) }

// RLock acquires the lock shared, waiting (FIFO: behind a queued
// exclusive waiter too, so writers do not starve) until ctx ends.
func (rw *RWMutex) RLock(ctx context.Context) error { return rw.r.acquire(ctx, true) }

// TryRLock acquires the lock shared if that is possible now.
func (rw *RWMutex) TryRLock(ctx context.Context) error { return rw.r.acquire(ctx, false) }

// RUnlock releases the shared grant.
func (rw *RWMutex) RUnlock(ctx context.Context) error { return rw.r.release(ctx) }

// Token returns the fencing token of the grant held (exclusive or
// shared), 0 if none.
func (rw *RWMutex) Token() uint64 {
	if t := rw.w.token(); t != 0 {
		return t
	}
	return rw.r.token()
}

// IsLocked reports whether the lock is held exclusively through this
// RWMutex; IsRLocked whether it is held shared.
func (rw *RWMutex) IsLocked() bool { return rw.w.token() != 0 }

// IsRLocked reports whether the lock is held shared through this RWMutex.
func (rw *RWMutex) IsRLocked() bool { return rw.r.token() != 0 }

// Lost returns a channel closed when the grant held (exclusive, else
// shared) ends; closed already if none is held.
func (rw *RWMutex) Lost() <-chan struct{} {
	if rw.w.token() != 0 {
		return rw.w.lostChan()
	}
	return rw.r.lostChan()
}

// Semaphore admits up to Limit sessions at once. A session holds at most
// one of its slots (use more sessions for more); every session must ask
// with the same limit (the server refuses a different one with
// api.ErrInvalid).
type Semaphore struct {
	h *handle
}

// Semaphore returns the semaphore name with limit slots, held through
// this session.
func (s *Session) Semaphore(name string, limit int) *Semaphore {
	return &Semaphore{h: newHandle(s, name, api.Semaphore, limit)}
}

// Name returns the semaphore's name; Limit its number of slots.
func (sem *Semaphore) Name() string { return sem.h.name }

// Limit returns the semaphore's number of slots.
func (sem *Semaphore) Limit() int { return sem.h.limit }

// Acquire takes a slot, waiting (FIFO) until one is free or ctx ends.
func (sem *Semaphore) Acquire(ctx context.Context) error { return sem.h.acquire(ctx, true) }

// TryAcquire takes a slot if one is free now (else api.ErrLockHeld).
func (sem *Semaphore) TryAcquire(ctx context.Context) error { return sem.h.acquire(ctx, false) }

// Release gives the slot back (by its token, like Mutex.Unlock).
func (sem *Semaphore) Release(ctx context.Context) error { return sem.h.release(ctx) }

// Token returns the fencing token of the slot held, 0 if none.
func (sem *Semaphore) Token() uint64 { return sem.h.token() }

// IsAcquired reports whether this Semaphore holds a slot.
func (sem *Semaphore) IsAcquired() bool { return sem.h.token() != 0 }

// Lost returns a channel closed when the slot held ends.
func (sem *Semaphore) Lost() <-chan struct{} { return sem.h.lostChan() }
