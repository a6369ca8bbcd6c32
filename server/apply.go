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
	if len(res.Withdrawn) > 0 {
		s.waits.withdrawn(res.Withdrawn)
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

// CaptureSnapshot implements consensus.SnapshotCapturer: the fsm copies
// its state on the Raft loop, between two applies, and the copy is
// encoded and written on the node's snapshot goroutine while applies go
// on.
func (a *applier) CaptureSnapshot() (func(io.Writer) error, error) {
	return a.s.fsm.CaptureSnapshot(), nil
}

// Restore replaces the fsm's state with a snapshot's (at start, or a
// snapshot installed from the leader). Watchers and readers waiting for a
// change look again.
func (a *applier) Restore(r io.Reader) error {
	if err := a.s.fsm.Restore(r); err != nil {
		return err
	}
	// The grants, withdrawals and session ends inside the snapshot's
	// range were never applied here one by one, so blocked acquires
	// learn their fate from the restored state instead.
	a.s.waits.reconcile(a.s.fsm)
	a.s.changes.notify()
	return nil
}

var _ consensus.SnapshotCapturer = (*applier)(nil)

// outcome ends a blocking acquire.
type outcome struct {
	grant *api.Grant
	err   error
}

type waiter struct {
	session session.ID
	lock    string
	ch      chan outcome // capacity 1: the applier never blocks
}

// waitTable routes the fate of queued waits (by wait id) to the calls
// blocked on them. Several calls may wait on one wait id (a retried
// acquire answered with the same wait).
type waitTable struct {
	mu   sync.Mutex
	byID map[uint64][]*waiter
}

func newWaitTable() *waitTable { return &waitTable{byID: map[uint64][]*waiter{}} }

func (t *waitTable) add(waitID uint64, sess session.ID, lock string) *waiter {
	w := &waiter{session: sess, lock: lock, ch: make(chan outcome, 1)}
	t.mu.Lock()
	t.byID[waitID] = append(t.byID[waitID], w)
	t.mu.Unlock()
	return w
}

func (t *waitTable) remove(waitID uint64, w *waiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := t.byID[waitID]
	for i := range ws {
		if ws[i] == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(t.byID, waitID)
	} else {
		t.byID[waitID] = ws
	}
}

// settle hands o to every call waiting on waitID. Caller holds mu.
func (t *waitTable) settleLocked(waitID uint64, o outcome) {
	for _, w := range t.byID[waitID] {
		select {
		case w.ch <- o:
		default: // already settled
		}
	}
	delete(t.byID, waitID)
}

func (t *waitTable) granted(gs []api.Grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range gs {
		if gs[i].WaitID != 0 {
			g := gs[i]
			t.settleLocked(g.WaitID, outcome{grant: &g})
		}
	}
}

func (t *waitTable) withdrawn(ids []uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		t.settleLocked(id, outcome{err: api.Errorf(api.CodeUnavailable,
			"the wait was withdrawn by an earlier attempt of this acquire; retry")})
	}
}

func (t *waitTable) ended(ids []session.ID) {
	dead := map[session.ID]bool{}
	for _, id := range ids {
		dead[id] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for wid, ws := range t.byID {
		if len(ws) > 0 && dead[ws[0].session] {
			t.settleLocked(wid, outcome{err: api.Errorf(api.CodeSessionNotFound, "session %s ended while waiting for the lock", ws[0].session)})
		}
	}
}

// waitState is what reconcile reads of the state machine.
type waitState interface {
	Lock(name string) api.LockInfo
	Session(id session.ID) (api.SessionInfo, bool)
}

// reconcile settles every wait from the state alone (after a snapshot
// replaced it): granted if the lock holds a grant from that wait, ended
// if the session is gone, withdrawn if the wait is no longer queued;
// still-queued waits keep waiting.
func (t *waitTable) reconcile(st waitState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for wid, ws := range t.byID {
		if len(ws) == 0 {
			continue
		}
		if o, ok := waitOutcome(st, wid, ws[0]); ok {
			t.settleLocked(wid, o)
		}
	}
}

// waitOutcome decides a wait from the state: ok is false while it is
// still queued.
func waitOutcome(st waitState, waitID uint64, w *waiter) (outcome, bool) {
	info := st.Lock(w.lock)
	for i := range info.Holders {
		if g := info.Holders[i]; g.Session == w.session && g.WaitID == waitID {
			return outcome{grant: &g}, true
		}
	}
	for _, q := range info.Waiters {
		if q.WaitID == waitID {
			return outcome{}, false
		}
	}
	if _, ok := st.Session(w.session); !ok {
		return outcome{err: api.Errorf(api.CodeSessionNotFound, "session %s ended while waiting for the lock", w.session)}, true
	}
	return outcome{err: api.Errorf(api.CodeUnavailable, "the wait for lock %q ended while this node caught up from a snapshot; retry", w.lock)}, true
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
