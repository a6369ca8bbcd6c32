package server

import (
	"io"
	"sync"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/session"
)

// applier adapts the fsm to consensus.StateMachine and tells the rest of
// the server what each apply changed. It runs on the Raft loop goroutine,
// so it only does in-memory work and never blocks.
type applier struct{ s *Server }

var _ consensus.StateMachine = (*applier)(nil)

func (a *applier) Apply(e consensus.Entry) any {
	s := a.s
	// leaseMu spans the apply so that a promotion reads the sessions and
	// fills the tracker between two applies, never in the middle of one.
	s.leaseMu.Lock()
	res := s.fsm.Apply(uint64(e.Index), e.Time, e.Data)
	if !res.Duplicate {
		s.trackLeases(res)
	}
	s.leaseMu.Unlock()
	if len(res.Ended) > 0 {
		s.waits.ended(res.Ended)
	}
	if len(res.Granted) > 0 {
		s.waits.granted(res.Granted)
	}
	s.changes.notify()
	return res
}

// trackLeases mirrors session changes into the leader's tracker (a
// follower's tracker ignores them). Caller holds leaseMu.
func (s *Server) trackLeases(res *fsm.Result) {
	now := s.cfg.Now()
	if res.Session != nil && res.Err == nil {
		s.tracker.Add(now, session.Lease{ID: res.Session.ID, TTL: time.Duration(res.Session.TTL), ExpiresAt: res.Session.ExpiresAt})
	}
	for _, id := range res.Ended {
		s.tracker.Remove(id)
	}
	for _, d := range res.Checkpointed {
		s.tracker.Checkpointed(d.ID, d.ExpiresAt)
	}
}

func (a *applier) Snapshot(w io.Writer) error { return a.s.fsm.Snapshot(w) }
func (a *applier) Restore(r io.Reader) error  { return a.s.fsm.Restore(r) }

// outcome ends a blocking acquire.
type outcome struct {
	grant *api.Grant
	err   error
}

type waiter struct {
	session session.ID
	ch      chan outcome // capacity 1: the applier never blocks
}

// waitTable routes grants of queued waits (by wait id) to the calls
// blocked on them.
type waitTable struct {
	mu    sync.Mutex
	byID  map[uint64]*waiter
	limit int
}

func newWaitTable() *waitTable { return &waitTable{byID: map[uint64]*waiter{}} }

func (t *waitTable) add(waitID uint64, sess session.ID) *waiter {
	w := &waiter{session: sess, ch: make(chan outcome, 1)}
	t.mu.Lock()
	t.byID[waitID] = w
	t.mu.Unlock()
	return w
}

func (t *waitTable) remove(waitID uint64) {
	t.mu.Lock()
	delete(t.byID, waitID)
	t.mu.Unlock()
}

func (t *waitTable) granted(gs []api.Grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range gs {
		if w, ok := t.byID[gs[i].WaitID]; ok && gs[i].WaitID != 0 {
			delete(t.byID, gs[i].WaitID)
			g := gs[i]
			w.ch <- outcome{grant: &g}
		}
	}
}

func (t *waitTable) ended(ids []session.ID) {
	dead := map[session.ID]bool{}
	for _, id := range ids {
		dead[id] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for wid, w := range t.byID {
		if dead[w.session] {
			delete(t.byID, wid)
			w.ch <- outcome{err: api.Errorf(api.CodeSessionNotFound, "session %s ended while waiting for the lock", w.session)}
		}
	}
}

// broadcaster wakes every goroutine waiting for the next change.
type broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcaster() *broadcaster { return &broadcaster{ch: make(chan struct{})} }

// wait returns a channel closed at the next notify.
func (b *broadcaster) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}
