package session

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by Tracker.Keepalive.
var (
	// ErrNotLeader: this node does not hold deadlines; forward the
	// keepalive to the leader.
	ErrNotLeader = errors.New("session: not the leader")
	// ErrUnknownSession: no such session is tracked (it never existed, it
	// ended, or its create entry has not been applied yet).
	ErrUnknownSession = errors.New("session: unknown session")
	// ErrExpired: the session's deadline passed and the leader has
	// proposed its expiry; a keepalive can no longer save it.
	ErrExpired = errors.New("session: expired")
)

// Lease is a session's replicated lease as the fsm holds it.
type Lease struct {
	ID  ID
	TTL time.Duration
	// ExpiresAt is Unix nanoseconds in entry time: the create entry's time
	// plus TTL, then whatever the last applied checkpoint set.
	ExpiresAt int64
}

// Checkpoint asks the fsm to set a session's replicated ExpiresAt (Unix
// nanoseconds) to the deadline earned by keepalives this leader received.
type Checkpoint struct {
	ID        ID
	ExpiresAt int64
}

// TrackerConfig tunes a Tracker. Zero values take the defaults named on
// each field, except Grace, which must be given.
type TrackerConfig struct {
	// Grace is the least time a session gets after a promotion: long
	// enough for its client to find the new leader. The server passes
	// about one maximum election timeout.
	Grace time.Duration
	// StallThreshold: a gap between two calls longer than this is a stall
	// (the leader could not process keepalives), and it is added to every
	// deadline. Default Grace/2. It must exceed the caller's tick.
	StallThreshold time.Duration
	// MaxExpireBatch caps the ids Expired returns per call (one expire
	// entry). Default 1000.
	MaxExpireBatch int
	// MaxCheckpointBatch caps the checkpoints Checkpoints returns per call
	// (one checkpoint entry). Default 1000.
	MaxCheckpointBatch int
	// Retry: an expiry or checkpoint handed out but not applied after this
	// long is handed out again (its proposal was lost). Default 2×Grace.
	Retry time.Duration
}

// Validate fills defaults and checks the values.
func (c *TrackerConfig) Validate() error {
	if c.Grace <= 0 {
		return fmt.Errorf("tracker grace %v must be positive (about one maximum election timeout)", c.Grace)
	}
	if c.StallThreshold == 0 {
		c.StallThreshold = c.Grace / 2
	}
	if c.MaxExpireBatch == 0 {
		c.MaxExpireBatch = 1000
	}
	if c.MaxCheckpointBatch == 0 {
		c.MaxCheckpointBatch = 1000
	}
	if c.Retry == 0 {
		c.Retry = 2 * c.Grace
	}
	if c.StallThreshold < 0 || c.Retry < 0 {
		return fmt.Errorf("tracker stall threshold %v and retry %v must be positive", c.StallThreshold, c.Retry)
	}
	if c.MaxExpireBatch < 0 || c.MaxCheckpointBatch < 0 {
		return fmt.Errorf("tracker batch sizes (expire %d, checkpoint %d) must be positive", c.MaxExpireBatch, c.MaxCheckpointBatch)
	}
	return nil
}

// checkpointLagDiv sets when a keepalive is worth a checkpoint: once the
// deadline it earned is more than TTL/checkpointLagDiv past the replicated
// ExpiresAt. See the Tracker comment for why TTL/6 and not TTL/3.
const checkpointLagDiv = 6

// Tracker holds the leader's keepalive deadlines (doc.go, invariants 1–4).
// It has no goroutines and reads no clock: the caller passes now to every
// call that needs it, calls Observe at every tick from the loop that also
// handles keepalives, proposes what Expired and Checkpoints return, and
// reports applied entries with Add, Remove and Checkpointed. It is not
// safe for concurrent use.
//
// Deadlines run on the clock of the times passed in (the monotonic clock
// for time.Now values) measured from the promotion; replicated ExpiresAt
// values are converted with the wall reading taken at promotion. A time
// earlier than one already seen counts as the latest one seen.
//
// Checkpoints. A new leader's deadline for a session is
// max(promotion+Grace, ExpiresAt), so ExpiresAt must stay ahead of the
// client's next keepalive even when the failover came right after a
// keepalive whose checkpoint was lost with the old leader. A session is
// due for a checkpoint once its keepalive deadline is more than TTL/6
// past ExpiresAt: for keepalives up to TTL/3 apart, losing the newest
// one's checkpoint still leaves ExpiresAt at least TTL/3 past the next
// keepalive. A threshold of TTL/3 checkpoints only every other keepalive
// when they come just under TTL/3 apart, and that margin vanishes
// (TestCheckpointLagLeavesMarginAfterALostCheckpoint). Losing the
// checkpoints of two consecutive keepalives of one client (two leaders
// each gone within the checkpoint delay of one; possible only when
// leadership moves faster than TTL/3 plus that delay) leaves no margin,
// so callers should call Checkpoints at every tick to keep the delay short.
type Tracker struct {
	cfg    TrackerConfig
	leader bool
	lagDiv int64 // checkpointLagDiv; tests try other values

	base     time.Time // the promotion time; offsets below count from it
	baseWall int64     // base in Unix nanoseconds
	seen     int64     // latest offset passed in
	shift    int64     // total stall added to every deadline (seen-shift is the deadline clock)
	stalled  int64     // stall added since the last Observe

	sessions  map[ID]*tracked
	deadlines deadlineHeap     // sessions not yet handed out for expiry, by deadline
	expiring  queue[handedOut] // expiries handed out, oldest first
	due       queue[*tracked]  // sessions whose keepalives are worth a checkpoint
	offered   queue[handedOut] // checkpoints handed out, oldest first
}

// tracked is one session. deadline and the handed-out times are on the
// deadline clock (offset minus stall shift); ka, rep and offer are plain
// offsets, convertible to entry time.
type tracked struct {
	id       ID
	ttl      int64
	deadline int64
	ka       int64 // deadline earned by the last keepalive: what a checkpoint replicates
	rep      int64 // replicated ExpiresAt
	offer    int64 // checkpoint handed out, not yet applied (if offering)
	offerAt  int64
	expireAt int64 // when handed out for expiry (if expiring)
	hidx     int   // index in deadlines, -1 when not there

	offering, expiring, queued, gone bool
}

// handedOut records an expiry or checkpoint handed out at a time; it is
// stale once the session ended or was handed out again.
type handedOut struct {
	s  *tracked
	at int64
}

// NewTracker returns a tracker for a node that is not (yet) leader.
func NewTracker(cfg TrackerConfig) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Tracker{cfg: cfg, lagDiv: checkpointLagDiv}, nil
}

// Promote starts tracking after this node became leader, with the leases
// from the applied state. Every deadline is max(now+Grace,
// ExpiresAt) (invariants 2 and 3). A leader promoted again starts afresh.
// A lease with a non-positive TTL or a repeated id is a broken fsm
// invariant and panics.
func (t *Tracker) Promote(now time.Time, leases []Lease) {
	t.Demote()
	t.leader = true
	t.base, t.baseWall = now, now.UnixNano()
	t.sessions = make(map[ID]*tracked, len(leases))
	slab := make([]tracked, len(leases)) // one allocation; freed by the next Promote or Demote
	t.deadlines = make(deadlineHeap, 0, len(leases))
	grace := int64(t.cfg.Grace)
	for i, l := range leases {
		if l.TTL <= 0 {
			panic(fmt.Sprintf("session: lease %v has TTL %v; the fsm admits only positive TTLs", l.ID, l.TTL))
		}
		if _, dup := t.sessions[l.ID]; dup {
			panic(fmt.Sprintf("session: lease %v listed twice in Promote", l.ID))
		}
		rep := l.ExpiresAt - t.baseWall
		s := &slab[i]
		*s = tracked{id: l.ID, ttl: int64(l.TTL), deadline: max(grace, rep), ka: rep, rep: rep, hidx: len(t.deadlines)}
		t.sessions[l.ID] = s
		t.deadlines = append(t.deadlines, slot{s.deadline, s.id, s})
	}
	t.deadlines.init()
}

// Demote drops every deadline: this node is no longer leader.
func (t *Tracker) Demote() {
	*t = Tracker{cfg: t.cfg, lagDiv: t.lagDiv}
}

// Add tracks a session whose create entry was applied while this node is
// leader: its deadline is now+TTL. Adding a tracked session counts as a
// keepalive. Not leader: no-op.
func (t *Tracker) Add(now time.Time, l Lease) {
	if !t.leader {
		return
	}
	if l.TTL <= 0 {
		panic(fmt.Sprintf("session: lease %v has TTL %v; the fsm admits only positive TTLs", l.ID, l.TTL))
	}
	off, clk := t.clock(now)
	if s := t.sessions[l.ID]; s != nil {
		if !s.expiring {
			s.ttl = int64(l.TTL)
			t.refresh(s, off, clk)
		}
		return
	}
	rep := l.ExpiresAt - t.baseWall
	s := &tracked{id: l.ID, ttl: int64(l.TTL), deadline: clk + int64(l.TTL), ka: off + int64(l.TTL), rep: rep}
	t.sessions[l.ID] = s
	t.deadlines.push(s)
	t.checkDue(s)
}

// Remove stops tracking a session whose end (expire or destroy) was
// applied. Unknown ids and a non-leader are no-ops.
func (t *Tracker) Remove(id ID) {
	s := t.sessions[id]
	if s == nil {
		return
	}
	delete(t.sessions, id)
	s.gone = true
	if s.hidx >= 0 {
		t.deadlines.remove(s.hidx)
	}
}

// Keepalive renews a session: its deadline becomes now+TTL (never
// earlier than it was). It returns the TTL, or ErrNotLeader,
// ErrUnknownSession, or ErrExpired once the expiry was handed out.
func (t *Tracker) Keepalive(now time.Time, id ID) (time.Duration, error) {
	if !t.leader {
		return 0, ErrNotLeader
	}
	off, clk := t.clock(now)
	s := t.sessions[id]
	if s == nil {
		return 0, ErrUnknownSession
	}
	if s.expiring {
		return 0, ErrExpired
	}
	t.refresh(s, off, clk)
	return time.Duration(s.ttl), nil
}

func (t *Tracker) refresh(s *tracked, off, clk int64) {
	// Only the session moves; its heap slot keeps the earlier deadline as a
	// lower bound, fixed when it reaches the top (settle).
	s.deadline = max(s.deadline, clk+s.ttl)
	s.ka = max(s.ka, off+s.ttl)
	t.checkDue(s)
}

// Observe must be called at every tick. When the tracker was not driven
// for longer than StallThreshold (by any call), the gap is added to every
// deadline (invariant 4). Every method taking now does the same check, so
// the order of calls after a stall does not matter. Observe returns the
// stall time added since the previous Observe, for the caller to log;
// zero when there was none.
func (t *Tracker) Observe(now time.Time) time.Duration {
	if !t.leader {
		return 0
	}
	t.clock(now)
	d := t.stalled
	t.stalled = 0
	return time.Duration(d)
}

// clock turns now into an offset from the promotion and a time on the
// deadline clock, compensating a stall first.
func (t *Tracker) clock(now time.Time) (off, clk int64) {
	off = max(int64(now.Sub(t.base)), t.seen)
	if gap := off - t.seen; gap > int64(t.cfg.StallThreshold) {
		t.shift += gap
		t.stalled += gap
	}
	t.seen = off
	return off, off - t.shift
}

// Expired hands out up to MaxExpireBatch sessions to expire, oldest
// deadline first: first those handed out at least Retry ago and still not
// ended, then those whose deadline is ≤ now. A session handed out is not
// handed out again until Retry passed. The caller proposes them as one
// expire entry (after confirming it is still leader).
func (t *Tracker) Expired(now time.Time) []ID {
	if !t.leader {
		return nil
	}
	_, clk := t.clock(now)
	var ids []ID
	retry := int64(t.cfg.Retry)
	for len(ids) < t.cfg.MaxExpireBatch {
		h, ok := t.expiring.peek()
		if !ok || h.at+retry > clk {
			break
		}
		t.expiring.pop()
		if h.s.gone || !h.s.expiring || h.s.expireAt != h.at {
			continue
		}
		ids = append(ids, t.handOutExpiry(h.s, clk))
	}
	for len(ids) < t.cfg.MaxExpireBatch && t.deadlines.settle(clk) {
		s := t.deadlines.pop()
		s.expiring = true
		ids = append(ids, t.handOutExpiry(s, clk))
	}
	return ids
}

func (t *Tracker) handOutExpiry(s *tracked, clk int64) ID {
	s.expireAt = clk
	t.expiring.push(handedOut{s, clk})
	return s.id
}

// Checkpoints hands out up to MaxCheckpointBatch sessions whose keepalive
// deadline is more than TTL/6 past their replicated ExpiresAt (and past
// any checkpoint already handed out), in the order they became due. A
// checkpoint handed out but not applied within Retry is handed out again.
// The cost is proportional to the sessions returned, not to all sessions;
// calling it at every tick keeps checkpoints prompt.
func (t *Tracker) Checkpoints(now time.Time) []Checkpoint {
	if !t.leader {
		return nil
	}
	_, clk := t.clock(now)
	retry := int64(t.cfg.Retry)
	for {
		h, ok := t.offered.peek()
		if !ok || h.at+retry > clk {
			break
		}
		t.offered.pop()
		if h.s.gone || !h.s.offering || h.s.offerAt != h.at {
			continue
		}
		h.s.offering = false // lost: fall back to the replicated value
		t.checkDue(h.s)
	}
	var cps []Checkpoint
	for len(cps) < t.cfg.MaxCheckpointBatch {
		s, ok := t.due.peek()
		if !ok {
			break
		}
		t.due.pop()
		s.queued = false
		if s.gone || s.expiring || !t.isDue(s) {
			continue
		}
		s.offering, s.offer, s.offerAt = true, s.ka, clk
		t.offered.push(handedOut{s, clk})
		cps = append(cps, Checkpoint{ID: s.id, ExpiresAt: t.baseWall + s.ka})
	}
	return cps
}

// Checkpointed records that a checkpoint entry was applied: the session's
// replicated ExpiresAt is now expiresAt (Unix nanoseconds), as the fsm set
// it. Unknown ids and a non-leader are no-ops.
func (t *Tracker) Checkpointed(id ID, expiresAt int64) {
	s := t.sessions[id]
	if s == nil {
		return
	}
	s.rep = expiresAt - t.baseWall
	if s.offering && s.offer <= s.rep {
		s.offering = false
	}
	t.checkDue(s)
}

func (t *Tracker) isDue(s *tracked) bool {
	known := s.rep
	if s.offering {
		known = max(known, s.offer)
	}
	return s.ka-known > s.ttl/t.lagDiv
}

func (t *Tracker) checkDue(s *tracked) {
	if !s.queued && !s.expiring && t.isDue(s) {
		s.queued = true
		t.due.push(s)
	}
}

// Len is the number of sessions tracked, including those whose expiry was
// handed out but not yet applied.
func (t *Tracker) Len() int { return len(t.sessions) }

// Leader reports whether the tracker holds deadlines.
func (t *Tracker) Leader() bool { return t.leader }

// NextDeadline is when Expired will next have something to hand out (a
// deadline or a retry), for arming a timer; false when nothing is pending.
func (t *Tracker) NextDeadline() (time.Time, bool) {
	next, ok := int64(0), false
	if t.deadlines.settle(1<<63 - 1) {
		next, ok = t.deadlines[0].deadline, true
	}
	for {
		h, found := t.expiring.peek()
		if !found {
			break
		}
		if h.s.gone || !h.s.expiring || h.s.expireAt != h.at {
			t.expiring.pop() // stale
			continue
		}
		if r := h.at + int64(t.cfg.Retry); !ok || r < next {
			next, ok = r, true
		}
		break
	}
	if !ok {
		return time.Time{}, false
	}
	return t.base.Add(time.Duration(next + t.shift)), true
}

// deadlineHeap is a binary min-heap of sessions by deadline (then id, so
// the order is deterministic). The key lives in the slot, so comparisons
// do not chase pointers; each session knows its slot. A keepalive only
// moves a deadline later and does not touch the heap: a slot's key is a
// lower bound of its session's deadline, made exact by settle when the
// slot reaches the top. Keepalive is O(1); each session is sifted down at
// most once per time its stale key comes up, not once per keepalive.
type deadlineHeap []slot

type slot struct {
	deadline int64
	id       ID
	s        *tracked
}

func (h deadlineHeap) less(i, j int) bool {
	a, b := &h[i], &h[j]
	return a.deadline < b.deadline || a.deadline == b.deadline && a.id < b.id
}

func (h deadlineHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].s.hidx, h[j].s.hidx = i, j
}

func (h deadlineHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h deadlineHeap) down(i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if r := c + 1; r < n && h.less(r, c) {
			c = r
		}
		if !h.less(c, i) {
			return
		}
		h.swap(i, c)
		i = c
	}
}

func (h deadlineHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// settle reports whether the earliest deadline is ≤ limit, first giving
// every slot it meets at the top whose key is stale (the session's
// deadline moved later since) its real deadline.
func (h deadlineHeap) settle(limit int64) bool {
	for len(h) > 0 && h[0].deadline <= limit {
		d := h[0].s.deadline
		if d == h[0].deadline {
			return true
		}
		h[0].deadline = d
		h.down(0)
	}
	return false
}

func (h *deadlineHeap) push(s *tracked) {
	s.hidx = len(*h)
	*h = append(*h, slot{s.deadline, s.id, s})
	h.up(s.hidx)
}

func (h *deadlineHeap) pop() *tracked {
	s := (*h)[0].s
	h.remove(0)
	return s
}

func (h *deadlineHeap) remove(i int) {
	old := *h
	last := len(old) - 1
	s := old[i].s
	if i != last {
		old.swap(i, last)
	}
	old[last] = slot{}
	*h = old[:last]
	if i != last {
		h.down(i)
		h.up(i)
	}
	s.hidx = -1
}

// queue is a FIFO that reuses its array.
type queue[T any] struct {
	items []T
	head  int
}

func (q *queue[T]) push(x T) { q.items = append(q.items, x) }

func (q *queue[T]) peek() (T, bool) {
	if q.head == len(q.items) {
		var zero T
		return zero, false
	}
	return q.items[q.head], true
}

func (q *queue[T]) pop() {
	var zero T
	q.items[q.head] = zero
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 1024 && 2*q.head >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
}
