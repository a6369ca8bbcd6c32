package fsm

// Failing tests for deviations of the fsm from issue 6's contract found by
// the model-based property test (property_test.go). Each names the
// knownFSMBugs field (model_test.go) that the model uses to tolerate it;
// clear the field once the test passes.

import (
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// delayedLock sets up lock "db": session a (lock-delay 5 s) held it
// exclusively and expired at t0, so it is in lock-delay until t0+5s; b
// queued for it (shared) during the delay, at t0. It returns b, and a
// third session c.
func delayedLock(t *testing.T, h *tfsm) (b, c session.ID) {
	t.Helper()
	a := h.session(10 * time.Second) // lock-delay 5 s
	b, c = h.session(10*time.Second), h.session(10*time.Second)
	h.ok(acquire("db", a, api.Exclusive, 0, false))
	h.ok(Command{Kind: KindSessionExpire, SessionExpire: &SessionExpire{IDs: []session.ID{a}}})
	if w := h.ok(acquire("db", b, api.Shared, 0, true)).Wait; w == nil {
		t.Fatal("b should queue during the lock-delay")
	}
	return b, c
}

// Contract (issue 6, Locks): "a waiter is then granted by the first entry
// at or after that time". An entry that carries a retried request — a
// duplicate or a stale sequence — or an undecodable command is still an
// entry at that time, but it ends no lock-delay: Apply returns before
// wakeDelayed. The waiter stays queued behind a delay that is over
// (Lock().DelayUntil in the past) until some later entry, and if the
// leader's tick was the entry that got lost to a retry, NextWakeup keeps
// reporting a time that has passed.
// knownFSMBugs.NoWakeOnUnappliedEntry.
func TestBugLockDelayNotEndedByUnappliedEntry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry func(h *tfsm) *Result
	}{
		{"duplicate", func(h *tfsm) *Result {
			c := put("k", "v", 0)
			c.ClientID, c.Seq = 7, 1
			h.ok(c)
			h.now = t0.Add(5 * time.Second)
			return h.apply(c) // the retry is the first entry after the delay
		}},
		{"stale sequence", func(h *tfsm) *Result {
			c := put("k", "v", 0)
			c.ClientID, c.Seq = 7, 2
			h.ok(c)
			c.Seq = 1
			h.now = t0.Add(5 * time.Second)
			return h.apply(c)
		}},
		{"undecodable", func(h *tfsm) *Result {
			h.now = t0.Add(5 * time.Second)
			h.index++
			return h.f.Apply(h.index, h.now.UnixNano(), []byte{0xc1})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newT(t)
			b, _ := delayedLock(t, h)
			h.now = t0.Add(4 * time.Second) // entries before the delay's end
			res := tc.entry(h)
			li := h.f.Lock("db")
			if len(li.Holders) != 1 || li.Holders[0].Session != b || li.DelayUntil != 0 {
				t.Errorf("after the first entry at the delay's end: holders %+v waiters %+v delayUntil %d; want b granted and no delay",
					li.Holders, li.Waiters, li.DelayUntil)
			}
			if len(res.Granted) != 1 || res.Granted[0].Session != b {
				t.Errorf("that entry's result reports granted %+v; want b's grant, so the server can wake b's caller", res.Granted)
			}
		})
	}
}

// Contract: waiters are granted FIFO by the first entry at or after the
// delay's end. applyCommand runs the entry's own command first and ends
// the delay after it, so within that entry a new request is judged
// against a lock whose waiters have not been granted yet:
//   - a try-acquire compatible with the queued waiter is refused with
//     "lock held ... queued behind earlier waiters", although the waiter
//     is granted in the same entry and the request would fit next to it;
//   - a waiting acquire is answered with a Wait and, in the same result,
//     a Granted entry for that very wait (two contradicting answers).
//
// knownFSMBugs.WakeOnlyAfterCommand.
func TestBugLockDelayEndsAfterTheEntrysCommand(t *testing.T) {
	t.Run("try-acquire", func(t *testing.T) {
		h := newT(t)
		b, c := delayedLock(t, h)
		h.now = t0.Add(5 * time.Second) // the first entry at the delay's end
		res := h.apply(acquire("db", c, api.Shared, 0, false))
		if res.Err != nil || res.Grant == nil {
			t.Errorf("shared try-acquire at the delay's end, next to waiter b (shared): err %v; want a grant", res.Err)
		}
		if len(res.Granted) != 1 || res.Granted[0].Session != b {
			t.Errorf("granted %+v; want b's grant", res.Granted)
		}
	})
	t.Run("waiting acquire", func(t *testing.T) {
		h := newT(t)
		_, c := delayedLock(t, h)
		h.now = t0.Add(5 * time.Second)
		res := h.apply(acquire("db", c, api.Shared, 0, true))
		if res.Grant == nil || res.Wait != nil {
			t.Errorf("shared acquire with wait at the delay's end: grant %+v wait %+v granted %+v; want a grant, not a wait",
				res.Grant, res.Wait, res.Granted)
		}
	})
}

// Events of one expiry batch are committed session by session. When one
// session's ephemeral keys alone overflow the history, its revision is
// compacted whole; the next session's deletions (same revision) are then
// appended behind the compaction point: invisible to every watch, but
// counted in Stats().HistoryEvents, held in memory and written to
// snapshots until a later add drops them.
func TestBugExpiryBatchLeavesCompactedEventsInHistory(t *testing.T) {
	h := newT(t)
	h.f.history.maxEvents = 3
	a, b := h.session(10*time.Second), h.session(10*time.Second)
	for _, k := range []string{"a1", "a2", "a3", "a4"} {
		h.ok(put(k, "x", a))
	}
	h.ok(put("b1", "x", b))
	h.ok(Command{Kind: KindSessionExpire, SessionExpire: &SessionExpire{IDs: []session.ID{a, b}}})
	rev := int64(h.index)
	if _, _, err := h.f.Events(rev, "", true, 0); err == nil {
		t.Fatalf("the expiry's revision %d (5 events, history of 3) should be compacted", rev)
	}
	if n := h.f.Stats().HistoryEvents; n != 0 {
		t.Errorf("history holds %d events after its only revision was compacted; want 0", n)
	}
}
