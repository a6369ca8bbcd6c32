package fsm

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// tfsm applies commands with increasing indexes and a settable time.
type tfsm struct {
	t     *testing.T
	f     *FSM
	index uint64
	now   time.Time
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newT(t *testing.T) *tfsm {
	t.Helper()
	f, err := New(DefaultConfig(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return &tfsm{t: t, f: f, now: t0}
}

func (h *tfsm) apply(c Command) *Result {
	h.t.Helper()
	data, err := h.f.Codec().Encode(&c)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	return h.f.Apply(h.index, h.now.UnixNano(), data)
}

func (h *tfsm) ok(c Command) *Result {
	h.t.Helper()
	res := h.apply(c)
	if res.Err != nil {
		h.t.Fatalf("%s: unexpected error %v", c.Kind, res.Err)
	}
	return res
}

func (h *tfsm) fails(c Command, code api.Code) *Result {
	h.t.Helper()
	res := h.apply(c)
	if res.Err == nil || res.Err.Code != code {
		h.t.Fatalf("%s: got error %v, want code %s", c.Kind, res.Err, code)
	}
	return res
}

func (h *tfsm) session(ttl time.Duration) session.ID {
	h.t.Helper()
	return h.ok(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(ttl), LockDelay: int64(5 * time.Second)}}).Session.ID
}

func acquire(name string, s session.ID, mode api.Mode, limit int, wait bool) Command {
	return Command{Kind: KindLockAcquire, LockAcquire: &LockAcquire{Name: name, Session: s, Mode: mode, Limit: limit, Wait: wait}}
}

func release(name string, s session.ID, token uint64) Command {
	return Command{Kind: KindLockRelease, LockRelease: &LockRelease{Name: name, Session: s, Token: token}}
}

func put(k, v string, s session.ID) Command {
	return Command{Kind: KindPut, Put: &Put{Key: k, Value: []byte(v), Session: s}}
}

func TestSessionCreateRules(t *testing.T) {
	h := newT(t)
	res := h.ok(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second), LockDelay: 0, Name: "worker-1"}})
	if res.Session.ID != session.ID(h.index) || res.Session.ExpiresAt != t0.Add(10*time.Second).UnixNano() || res.Session.Name != "worker-1" {
		t.Fatalf("session %+v: id must be the entry index, expiry create time + TTL", res.Session)
	}
	h.fails(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(time.Second)}}, api.CodeInvalid)
	h.fails(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(25 * time.Hour)}}, api.CodeInvalid)
	h.fails(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second), LockDelay: int64(61 * time.Second)}}, api.CodeInvalid)
	h.fails(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second), Name: string(make([]byte, 300))}}, api.CodeTooLarge)
	h.fails(Command{Kind: KindSessionDestroy, SessionDestroy: &SessionDestroy{ID: 999}}, api.CodeSessionNotFound)
}

func TestSessionsPerClientLimit(t *testing.T) {
	h := newT(t)
	h.f.cfg.Limits.MaxSessionsPerClient = 2
	mk := Command{Kind: KindSessionCreate, ClientID: 7, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second)}}
	a := h.ok(mk).Session.ID
	h.ok(mk)
	h.fails(mk, api.CodeLimit)
	h.ok(Command{Kind: KindSessionDestroy, SessionDestroy: &SessionDestroy{ID: a}})
	h.ok(mk)
}

func TestExclusiveLockLifecycle(t *testing.T) {
	h := newT(t)
	a, b := h.session(10*time.Second), h.session(10*time.Second)
	g := h.ok(acquire("db", a, api.Exclusive, 0, false)).Grant
	if g.Token != h.index || g.Session != a {
		t.Fatalf("grant %+v: token must be the granting index %d", g, h.index)
	}
	again := h.ok(acquire("db", a, api.Exclusive, 0, false)).Grant
	if *again != *g {
		t.Fatalf("re-acquire by the holder returned %+v, want the same grant %+v", again, g)
	}
	res := h.fails(acquire("db", b, api.Exclusive, 0, false), api.CodeLockHeld)
	if res.Lock == nil || len(res.Lock.Holders) != 1 || res.Lock.Holders[0].Session != a {
		t.Fatalf("refusal should say who holds the lock: %+v", res.Lock)
	}
	if msg := res.Err.Error(); !bytes.Contains([]byte(msg), []byte(a.String())) || !bytes.Contains([]byte(msg), []byte("retry with --wait")) {
		t.Fatalf("refusal message %q should name the holder and the way out", msg)
	}
	w := h.ok(acquire("db", b, api.Exclusive, 0, true)).Wait
	if w == nil || w.WaitID != h.index {
		t.Fatalf("waiting acquire should queue with the entry index as wait id: %+v", w)
	}
	h.fails(release("db", a, g.Token+1), api.CodeStaleToken)
	rel := h.ok(release("db", a, g.Token))
	if len(rel.Granted) != 1 || rel.Granted[0].Session != b || rel.Granted[0].Token <= g.Token || rel.Granted[0].WaitID != w.WaitID {
		t.Fatalf("release should grant the waiter a higher token in the same apply: %+v", rel.Granted)
	}
	// A late retry of the first release must not release b's grant.
	h.fails(release("db", a, g.Token), api.CodeStaleToken)
	if cur, ok := h.f.CheckToken("db", rel.Granted[0].Token); !ok || cur.Session != b {
		t.Fatalf("b's token should be current: %v %+v", ok, cur)
	}
	if _, ok := h.f.CheckToken("db", g.Token); ok {
		t.Fatal("a's released token is still reported current")
	}
}

func TestSharedAndSemaphore(t *testing.T) {
	h := newT(t)
	s := []session.ID{h.session(10 * time.Second), h.session(10 * time.Second), h.session(10 * time.Second), h.session(10 * time.Second)}
	h.ok(acquire("rw", s[0], api.Shared, 0, false))
	h.ok(acquire("rw", s[1], api.Shared, 0, false))
	h.fails(acquire("rw", s[2], api.Exclusive, 0, false), api.CodeLockHeld)
	h.ok(acquire("rw", s[2], api.Exclusive, 0, true))
	// FIFO: a shared reader arriving after a queued writer waits too.
	if res := h.ok(acquire("rw", s[3], api.Shared, 0, true)); res.Wait == nil {
		t.Fatalf("a reader behind a queued writer must wait, got %+v", res.Grant)
	}

	h.ok(acquire("sem", s[0], api.Semaphore, 2, false))
	h.ok(acquire("sem", s[1], api.Semaphore, 2, false))
	h.fails(acquire("sem", s[2], api.Semaphore, 2, false), api.CodeLockHeld)
	h.fails(acquire("sem", s[2], api.Semaphore, 3, false), api.CodeInvalid)
	h.fails(acquire("sem", s[2], api.Shared, 0, false), api.CodeLockHeld)
	h.fails(acquire("x", s[2], api.Semaphore, 0, false), api.CodeInvalid)
	h.fails(acquire("x", s[2], api.Exclusive, 2, false), api.CodeInvalid)
	h.fails(acquire("x", s[2], api.Mode(9), 0, false), api.CodeInvalid)
	h.fails(acquire("", s[2], api.Exclusive, 0, false), api.CodeInvalid)
	h.fails(acquire("x", 424242, api.Exclusive, 0, false), api.CodeSessionNotFound)
}

func TestExpiryReleasesWithLockDelayDestroyDoesNot(t *testing.T) {
	h := newT(t)
	a, b := h.session(10*time.Second), h.session(10*time.Second)
	h.ok(acquire("db", a, api.Exclusive, 0, false))
	h.ok(acquire("db", b, api.Exclusive, 0, true))
	h.ok(put("a/lease", "x", a))
	exp := h.ok(Command{Kind: KindSessionExpire, SessionExpire: &SessionExpire{IDs: []session.ID{a, 12345}}})
	if len(exp.Ended) != 1 || exp.Ended[0] != a || len(exp.Granted) != 0 {
		t.Fatalf("expiry: ended %v granted %v; want a ended and nothing granted during lock-delay", exp.Ended, exp.Granted)
	}
	if _, ok, _ := h.f.Get("a/lease"); ok {
		t.Fatal("ephemeral key survived its session")
	}
	li := h.f.Lock("db")
	if li.DelayUntil != t0.Add(5*time.Second).UnixNano() || len(li.Waiters) != 1 {
		t.Fatalf("lock after expiry: %+v", li)
	}
	c := h.session(10 * time.Second)
	h.fails(acquire("db", c, api.Exclusive, 0, false), api.CodeLockDelay)
	if at, ok := h.f.NextWakeup(); !ok || at != li.DelayUntil {
		t.Fatalf("NextWakeup = %d %v, want %d", at, ok, li.DelayUntil)
	}
	h.now = t0.Add(5 * time.Second)
	tick := h.ok(Command{Kind: KindTick})
	if len(tick.Granted) != 1 || tick.Granted[0].Session != b {
		t.Fatalf("the first entry at the delay's end should grant the waiter: %+v", tick.Granted)
	}

	// A clean destroy releases at once.
	h.ok(Command{Kind: KindSessionDestroy, SessionDestroy: &SessionDestroy{ID: b}})
	if g := h.ok(acquire("db", c, api.Exclusive, 0, false)).Grant; g == nil {
		t.Fatal("lock should be free right after a clean destroy")
	}
}

func TestCancelWaitAndCancelAfterGrant(t *testing.T) {
	h := newT(t)
	a, b, c := h.session(10*time.Second), h.session(10*time.Second), h.session(10*time.Second)
	g := h.ok(acquire("q", a, api.Exclusive, 0, false)).Grant
	wb := h.ok(acquire("q", b, api.Exclusive, 0, true)).Wait
	wc := h.ok(acquire("q", c, api.Exclusive, 0, true)).Wait
	h.ok(Command{Kind: KindLockCancel, LockCancel: &LockCancel{Name: "q", Session: b, WaitID: wb.WaitID}})
	rel := h.ok(release("q", a, g.Token))
	if len(rel.Granted) != 1 || rel.Granted[0].Session != c {
		t.Fatalf("after b cancelled, c is next: %+v", rel.Granted)
	}
	// c's caller timed out and cancels the wait that was already granted.
	h.ok(Command{Kind: KindLockCancel, LockCancel: &LockCancel{Name: "q", Session: c, WaitID: wc.WaitID}})
	if li := h.f.Lock("q"); len(li.Holders) != 0 {
		t.Fatalf("a cancel racing a grant must release it, holders %+v", li.Holders)
	}
}

func TestWaitersOfEndedSessionAreRemoved(t *testing.T) {
	h := newT(t)
	a, b, c := h.session(10*time.Second), h.session(10*time.Second), h.session(10*time.Second)
	g := h.ok(acquire("l", a, api.Exclusive, 0, false)).Grant
	h.ok(acquire("l", b, api.Exclusive, 0, true))
	h.ok(acquire("l", c, api.Exclusive, 0, true))
	h.ok(Command{Kind: KindSessionDestroy, SessionDestroy: &SessionDestroy{ID: b}})
	rel := h.ok(release("l", a, g.Token))
	if len(rel.Granted) != 1 || rel.Granted[0].Session != c {
		t.Fatalf("grant went to %+v; the dead waiter b must never be granted (etcd#11456)", rel.Granted)
	}
}

func TestKVRevisionsAndTxn(t *testing.T) {
	h := newT(t)
	r1 := h.ok(put("cfg/a", "1", 0))
	r2 := h.ok(put("cfg/a", "2", 0))
	kv, ok, rs := h.f.Get("cfg/a")
	if !ok || string(kv.Value) != "2" || kv.Version != 2 || kv.CreateRevision != r1.Revision || kv.ModRevision != r2.Revision || rs.Revision != r2.Revision {
		t.Fatalf("kv %+v rs %+v", kv, rs)
	}
	if string(r2.PrevKV.Value) != "1" {
		t.Fatalf("prev kv %+v", r2.PrevKV)
	}
	h.ok(put("cfg/b", "x", 0))
	h.ok(put("other", "y", 0))
	list, more, _ := h.f.List("cfg/", "", 1)
	if len(list) != 1 || list[0].Key != "cfg/a" || !more {
		t.Fatalf("list %+v more %v", list, more)
	}
	cas := func(ver int64, v string) Command {
		return Command{Kind: KindTxn, Txn: &Txn{
			Compares: []api.Compare{{Key: "cfg/a", Target: api.CompareVersion, Op: api.Equal, Number: ver}},
			Then:     []api.Op{{Type: api.OpPut, Key: "cfg/a", Value: []byte(v)}, {Type: api.OpPut, Key: "cfg/c", Value: []byte(v)}},
			Else:     []api.Op{{Type: api.OpGet, Key: "cfg/a"}},
		}}
	}
	bad := h.ok(cas(1, "no"))
	if bad.Succeeded || len(bad.Ops) != 1 || string(bad.Ops[0].KVs[0].Value) != "2" {
		t.Fatalf("failed CAS should run else: %+v", bad)
	}
	good := h.ok(cas(2, "3"))
	if !good.Succeeded || good.Revision != int64(h.index) {
		t.Fatalf("CAS: %+v", good)
	}
	evs, _, err := h.f.Events(good.Revision, "cfg/", true, 0)
	if err != nil || len(evs) != 2 || evs[0].Revision != evs[1].Revision {
		t.Fatalf("a txn's events share one revision: %+v %v", evs, err)
	}
	del := h.ok(Command{Kind: KindDelete, Delete: &Delete{Key: "cfg/", Prefix: true}})
	if del.Deleted != 3 {
		t.Fatalf("prefix delete removed %d keys, want 3", del.Deleted)
	}
	h.fails(put("", "v", 0), api.CodeInvalid)
	h.fails(put(string(make([]byte, 5000)), "v", 0), api.CodeTooLarge)
	h.fails(Command{Kind: KindPut, Put: &Put{Key: "k", Value: make([]byte, 2<<20)}}, api.CodeTooLarge)
	h.fails(put("k", "v", 777), api.CodeSessionNotFound)
	ops := make([]api.Op, 129)
	for i := range ops {
		ops[i] = api.Op{Type: api.OpGet, Key: "k"}
	}
	h.fails(Command{Kind: KindTxn, Txn: &Txn{Then: ops}}, api.CodeLimit)
	// A txn with one bad op applies nothing.
	h.fails(Command{Kind: KindTxn, Txn: &Txn{Then: []api.Op{{Type: api.OpPut, Key: "ok", Value: []byte("1")}, {Type: api.OpPut, Key: ""}}}}, api.CodeInvalid)
	if _, ok, _ := h.f.Get("ok"); ok {
		t.Fatal("a rejected transaction applied part of itself")
	}
}

func TestWatchHistoryCompaction(t *testing.T) {
	h := newT(t)
	h.f.history.maxEvents = 3
	for i := 0; i < 5; i++ {
		h.ok(put("k", string(rune('a'+i)), 0))
	}
	_, _, err := h.f.Events(1, "k", false, 0)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeCompacted || !errors.Is(err, api.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	evs, next, err := h.f.Events(3, "k", false, 0)
	if err != nil || len(evs) != 3 || next != 6 {
		t.Fatalf("events from 3: %d events next %d err %v", len(evs), next, err)
	}
}

func TestExactlyOnce(t *testing.T) {
	h := newT(t)
	c := put("n", "1", 0)
	c.ClientID, c.Seq = 9, 1
	first := h.ok(c)
	c.Put.Value = []byte("changed")
	dup := h.ok(c)
	if !dup.Duplicate || dup.Revision != first.Revision {
		t.Fatalf("retry of seq 1 should return the remembered result: %+v", dup)
	}
	if kv, _, _ := h.f.Get("n"); string(kv.Value) != "1" || kv.Version != 1 {
		t.Fatalf("a retried command applied twice: %+v", kv)
	}
	c.Seq = 2
	h.ok(c)
	c.Seq = 1
	h.fails(c, api.CodeStaleSequence)
}

func TestTimeIsMonotonic(t *testing.T) {
	h := newT(t)
	h.now = t0.Add(time.Minute)
	h.ok(Command{Kind: KindTick})
	h.now = t0 // a new leader with a slower clock
	s := h.ok(Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(10 * time.Second)}}).Session
	if s.CreatedAt != t0.Add(time.Minute).UnixNano() {
		t.Fatalf("time ran backwards: created at %d", s.CreatedAt)
	}
}

func TestDecodeRejectsBadInput(t *testing.T) {
	cd := NewCodec()
	for _, b := range [][]byte{nil, {0xff}, []byte("garbage"), {0x81, 0xa1, 'v', 0x02}} {
		if _, err := cd.Decode(b); err == nil {
			t.Errorf("Decode(%x) accepted", b)
		}
	}
	data, _ := cd.Encode(&Command{Kind: KindPut, Put: &Put{Key: "k"}, Delete: &Delete{Key: "k"}})
	if _, err := cd.Decode(data); err == nil {
		t.Error("a command with two bodies was accepted")
	}
	data, _ = cd.Encode(&Command{Kind: Kind(99)})
	if _, err := cd.Decode(data); !errors.Is(err, api.ErrUnsupported) {
		t.Errorf("unknown kind: %v", err)
	}
	h := newT(t)
	if res := h.f.Apply(1, 0, []byte{0xc1}); res.Err == nil {
		t.Error("Apply of garbage returned no error")
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := newT(t)
	a, b := h.session(10*time.Second), h.session(20*time.Second)
	h.ok(acquire("l", a, api.Exclusive, 0, false))
	h.ok(acquire("l", b, api.Exclusive, 0, true))
	h.ok(put("e", "1", a))
	h.ok(put("p", "2", 0))
	c := put("d", "3", 0)
	c.ClientID, c.Seq = 5, 1
	h.ok(c)
	h.ok(Command{Kind: KindSessionExpire, SessionExpire: &SessionExpire{IDs: []session.ID{a}}})

	var s1 bytes.Buffer
	if err := h.f.Snapshot(&s1); err != nil {
		t.Fatal(err)
	}
	g, _ := New(DefaultConfig(time.Second))
	if err := g.Restore(bytes.NewReader(s1.Bytes())); err != nil {
		t.Fatal(err)
	}
	var s2 bytes.Buffer
	if err := g.Snapshot(&s2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s1.Bytes(), s2.Bytes()) {
		t.Fatal("snapshot of a restored fsm differs from the original")
	}
	// Restore then apply equals apply without restore.
	h2 := &tfsm{t: t, f: g, index: h.index, now: h.now.Add(10 * time.Second)}
	h.now = h2.now
	for _, tf := range []*tfsm{h, h2} {
		tf.ok(Command{Kind: KindTick})
		tf.ok(c) // duplicate must be remembered across restore
	}
	var s3, s4 bytes.Buffer
	_ = h.f.Snapshot(&s3)
	_ = g.Snapshot(&s4)
	if !bytes.Equal(s3.Bytes(), s4.Bytes()) {
		t.Fatal("restore-then-apply differs from apply")
	}
	if err := g.Restore(bytes.NewReader(s1.Bytes()[:len(s1.Bytes())/2])); err == nil {
		t.Fatal("a truncated snapshot was restored")
	}
}

// A node that gave up on a waiting acquire withdraws it late, after the
// client already re-sent the acquire (same lane, newer sequence) through
// another node and was granted: the late withdrawal must not undo it.
func TestLateCancelOfRetriedAcquireIsSkipped(t *testing.T) {
	h := newT(t)
	a, b := h.session(10*time.Second), h.session(10*time.Second)
	g := h.ok(acquire("l", a, api.Exclusive, 0, false)).Grant
	first := acquire("l", b, api.Exclusive, 0, true)
	first.ClientID, first.Seq = 42, 1
	w := h.ok(first).Wait
	retry := acquire("l", b, api.Exclusive, 0, true)
	retry.ClientID, retry.Seq = 42, 2
	if again := h.ok(retry).Wait; again == nil || again.WaitID != w.WaitID {
		t.Fatalf("the retry should find the same wait: %+v", again)
	}
	granted := h.ok(release("l", a, g.Token)).Granted
	if len(granted) != 1 || granted[0].Session != b {
		t.Fatalf("b should hold the lock: %+v", granted)
	}
	late := h.ok(Command{Kind: KindLockCancel, LockCancel: &LockCancel{Name: "l", Session: b, WaitID: w.WaitID, ClientID: 42, Seq: 1}})
	if len(late.Withdrawn) != 0 || len(h.f.Lock("l").Holders) != 1 {
		t.Fatalf("a late cancel of a superseded request released the retry's grant: %+v, holders %+v", late, h.f.Lock("l").Holders)
	}
	// The cancel of the current request still works.
	cur := h.ok(Command{Kind: KindLockCancel, LockCancel: &LockCancel{Name: "l", Session: b, WaitID: w.WaitID, ClientID: 42, Seq: 2}})
	if len(h.f.Lock("l").Holders) != 0 {
		t.Fatalf("the cancel of the current request should release the raced grant: %+v", cur)
	}
}
