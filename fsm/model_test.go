package fsm

// The reference model for the property test in property_test.go: a tiny,
// deliberately naive re-statement of the contract (issue 6 and
// ARCHITECTURE.md "Service semantics"). Plain slices and linear scans; no
// indexes, no caches, no incremental bookkeeping that could drift. Where
// the contract leaves a choice open (the order of error checks, the order
// in which one entry's grants are made), the model follows the fsm so
// that results can be compared field by field. So it does for what is
// configuration rather than behaviour: the history's byte accounting
// (eventSize) and the exactly-once sweep schedule (every DedupIdle/4).
// Everything else is derived from the contract, and a difference is a
// finding.

import (
	"bytes"
	"sort"
	"strings"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// knownFSMBugs are deviations from the contract that the model reproduces
// instead of flagging, so that the property test can keep hunting for
// other bugs until they are fixed. Each has a small failing test
// (TestBugLockDelayEndsAfterTheEntrysCommand,
// TestBugLockDelayNotEndedByUnappliedEntry). Set a field to false once the
// fsm is fixed; with all of them false the model is the contract.
var knownFSMBugs = struct {
	// WakeOnlyAfterCommand: an applied command runs before the lock-delays
	// that end at its entry's time are ended, so a waiter queued during
	// the delay is granted after (not before) the entry's own command.
	// Contract: waiters are granted at the first entry whose time is at
	// or after the delay's end, FIFO, ahead of anything that entry asks.
	WakeOnlyAfterCommand bool
	// NoWakeOnUnappliedEntry: an entry that is not applied (a duplicate or
	// stale retry, an undecodable command) ends no lock-delay, so the
	// waiters wait for a later entry. Contract: the first entry at or after
	// the delay's end grants them.
	NoWakeOnUnappliedEntry bool
}{
	WakeOnlyAfterCommand:   false,
	NoWakeOnUnappliedEntry: false,
}

// refModel is the reference state machine.
type refModel struct {
	cfg Config

	index     uint64
	now       int64
	revision  int64
	lastToken uint64

	sessions  []api.SessionInfo // by id (ids only grow); Locks and Keys left empty, derived on read
	locks     []*refLock        // any order; only locks with holders, waiters or a delay are kept
	kvs       []api.KeyValue    // sorted by key
	events    []api.Event       // the retained watch history, in revision order
	compacted int64             // highest revision dropped from the history
	dedup     []refDedup
	nextSweep int64
}

type refLock struct {
	name       string
	holders    []api.Grant  // in grant order
	waiters    []api.Waiter // FIFO
	delayUntil int64        // end of a lock-delay that has not been ended yet; 0 if none
}

type refDedup struct {
	client, seq uint64
	res         *Result
	lastSeen    int64
}

// refEntry is one log entry as the model sees it: a command, a leader's
// no-op, or bytes that must not decode (bad is the expected error code).
type refEntry struct {
	cmd  *Command
	noop bool
	bad  api.Code
}

func newRefModel(cfg Config) *refModel { return &refModel{cfg: cfg} }

// apply applies one entry. It returns nil for a no-op (ApplyNoop has no
// result).
func (m *refModel) apply(index uint64, t int64, e refEntry) *Result {
	m.index = index
	if t > m.now {
		m.now = t
	}
	// Lock-delays that are over by this entry's time end first: their
	// waiters were queued before anything this entry asks for.
	applied := e.cmd != nil && m.dedupVerdict(e.cmd) == dedupNew
	wakeFirst := e.noop || applied && !knownFSMBugs.WakeOnlyAfterCommand ||
		!e.noop && !applied && !knownFSMBugs.NoWakeOnUnappliedEntry
	var woken []api.Grant
	if wakeFirst {
		woken = m.wake()
	}
	defer m.endEntry()
	if e.noop {
		return nil
	}
	if e.cmd == nil {
		return &Result{Err: &api.Error{Code: e.bad}, Granted: woken}
	}
	c := e.cmd
	if c.ClientID != 0 && c.Seq != 0 {
		if d := m.dedupOf(c.ClientID); d != nil {
			switch {
			case c.Seq == d.seq:
				d.lastSeen = m.now
				// The remembered result, as it was, behind what this entry
				// granted by ending a lock-delay (so the server can wake
				// those callers).
				r := *d.res
				r.Duplicate = true
				if len(woken) > 0 {
					r.Granted = append(append([]api.Grant(nil), woken...), r.Granted...)
				}
				return &r
			case c.Seq < d.seq:
				d.lastSeen = m.now
				return &Result{Err: &api.Error{Code: api.CodeStaleSequence}, Granted: woken}
			}
		}
	}
	res := m.dispatch(c)
	res.Granted = append(woken, res.Granted...)
	if !wakeFirst {
		res.Granted = append(res.Granted, m.wake()...)
	}
	if c.ClientID != 0 && c.Seq != 0 {
		m.remember(c.ClientID, c.Seq, res)
	}
	m.sweepDedup()
	return res
}

// endEntry drops locks nobody holds, awaits or delays, and trims the watch
// history to its bounds, dropping whole revisions from the front.
func (m *refModel) endEntry() {
	var keep []*refLock
	for _, l := range m.locks {
		if len(l.holders) > 0 || len(l.waiters) > 0 || l.delayUntil != 0 {
			keep = append(keep, l)
		}
	}
	m.locks = keep
	for len(m.events) > 0 && (len(m.events) > m.cfg.HistoryMaxEvents || m.historyBytes() > m.cfg.HistoryMaxBytes) {
		rev := m.events[0].Revision
		for len(m.events) > 0 && m.events[0].Revision == rev {
			m.events = m.events[1:]
		}
		m.compacted = rev
	}
}

func (m *refModel) historyBytes() int64 {
	var n int64
	for i := range m.events {
		n += eventSize(&m.events[i]) // the accounting rule is configuration, not logic
	}
	return n
}

func (m *refModel) dispatch(c *Command) *Result {
	switch c.Kind {
	case KindSessionCreate:
		return m.createSession(c.ClientID, c.SessionCreate)
	case KindSessionDestroy:
		if m.session(c.SessionDestroy.ID) == nil {
			return refErr(api.CodeSessionNotFound)
		}
		res := &Result{}
		m.endSession(c.SessionDestroy.ID, false, res)
		return res
	case KindSessionExpire:
		res := &Result{}
		for _, id := range c.SessionExpire.IDs {
			if m.session(id) != nil {
				m.endSession(id, true, res)
			}
		}
		return res
	case KindSessionCheckpoint:
		res := &Result{}
		for _, d := range c.SessionCheckpoint.Deadlines {
			if s := m.session(d.ID); s != nil {
				s.ExpiresAt = d.ExpiresAt
				res.Checkpointed = append(res.Checkpointed, d)
			}
		}
		return res
	case KindLockAcquire:
		return m.acquire(c.LockAcquire)
	case KindLockRelease:
		return m.release(c.LockRelease)
	case KindLockCancel:
		return m.cancel(c.LockCancel)
	case KindPut:
		return m.put(c.Put)
	case KindDelete:
		return m.del(c.Delete)
	case KindTxn:
		return m.txn(c.Txn)
	case KindTick:
		return &Result{}
	}
	panic("model: unknown kind " + c.Kind.String())
}

func refErr(code api.Code) *Result { return &Result{Err: &api.Error{Code: code}} }

// ---- exactly-once ----

type dedupKind int

const (
	dedupNew dedupKind = iota
	dedupDuplicate
	dedupStale
)

func (m *refModel) dedupVerdict(c *Command) dedupKind {
	if c.ClientID == 0 || c.Seq == 0 {
		return dedupNew
	}
	d := m.dedupOf(c.ClientID)
	switch {
	case d == nil || c.Seq > d.seq:
		return dedupNew
	case c.Seq == d.seq:
		return dedupDuplicate
	}
	return dedupStale
}

func (m *refModel) dedupOf(client uint64) *refDedup {
	for i := range m.dedup {
		if m.dedup[i].client == client {
			return &m.dedup[i]
		}
	}
	return nil
}

func (m *refModel) remember(client, seq uint64, res *Result) {
	if d := m.dedupOf(client); d != nil {
		d.seq, d.res, d.lastSeen = seq, res, m.now
		return
	}
	if len(m.dedup) >= m.cfg.DedupMaxClients {
		// The table is full: the client seen longest ago goes (lowest id on
		// a tie).
		v := 0
		for i, d := range m.dedup {
			if d.lastSeen < m.dedup[v].lastSeen || (d.lastSeen == m.dedup[v].lastSeen && d.client < m.dedup[v].client) {
				v = i
			}
		}
		m.dedup = append(m.dedup[:v], m.dedup[v+1:]...)
	}
	m.dedup = append(m.dedup, refDedup{client: client, seq: seq, res: res, lastSeen: m.now})
}

// sweepDedup drops clients idle longer than DedupIdle. The sweep runs at
// most every DedupIdle/4 of entry time (after an applied command); its
// schedule is part of the replicated state, so the model keeps it too.
func (m *refModel) sweepDedup() {
	if m.now < m.nextSweep {
		return
	}
	idle := int64(m.cfg.DedupIdle)
	m.nextSweep = m.now + idle/4
	var keep []refDedup
	for _, d := range m.dedup {
		if m.now-d.lastSeen <= idle {
			keep = append(keep, d)
		}
	}
	m.dedup = keep
}

// ---- sessions ----

func (m *refModel) session(id session.ID) *api.SessionInfo {
	for i := range m.sessions {
		if m.sessions[i].ID == id {
			return &m.sessions[i]
		}
	}
	return nil
}

func (m *refModel) createSession(client uint64, c *SessionCreate) *Result {
	r := m.cfg.Rules
	switch {
	case c.TTL < int64(r.MinTTL) || c.TTL > int64(r.MaxTTL):
		return refErr(api.CodeInvalid)
	case c.LockDelay < 0 || c.LockDelay > int64(r.MaxLockDelay):
		return refErr(api.CodeInvalid)
	case len(c.Name) > m.cfg.Limits.MaxLabelBytes:
		return refErr(api.CodeTooLarge)
	}
	if client != 0 {
		n := 0
		for _, s := range m.sessions {
			if s.ClientID == client {
				n++
			}
		}
		if n >= m.cfg.Limits.MaxSessionsPerClient {
			return refErr(api.CodeLimit)
		}
	}
	info := api.SessionInfo{ID: session.ID(m.index), TTL: c.TTL, LockDelay: c.LockDelay, Name: c.Name, ClientID: client,
		CreatedAt: m.now, ExpiresAt: m.now + c.TTL}
	m.sessions = append(m.sessions, info)
	return &Result{Session: &info}
}

// endSession ends a live session: releases its locks (into lock-delay if
// it expired and has one), drops its waits, deletes its ephemeral keys as
// one revision, then grants what that freed, lock by lock in name order.
func (m *refModel) endSession(id session.ID, expired bool, res *Result) {
	s := *m.session(id)
	var touched []string
	for _, l := range m.sortedLocks() {
		if i := l.holderIdx(id); i >= 0 {
			l.holders = append(l.holders[:i], l.holders[i+1:]...)
			if expired && s.LockDelay > 0 {
				l.delayUntil = max(l.delayUntil, m.now+s.LockDelay)
			}
			touched = append(touched, l.name)
		}
		if i := l.waiterIdx(id); i >= 0 {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			touched = append(touched, l.name)
		}
	}
	var evs []api.Event
	for _, kv := range m.sortedKVs() {
		if kv.Session == id {
			evs = append(evs, m.removeKey(kv.Key))
		}
	}
	if len(evs) > 0 {
		m.commit(evs)
		res.Revision = m.revision
	}
	for i := range m.sessions {
		if m.sessions[i].ID == id {
			m.sessions = append(m.sessions[:i], m.sessions[i+1:]...)
			break
		}
	}
	res.Ended = append(res.Ended, id)
	for _, name := range touched {
		res.Granted = append(res.Granted, m.settle(m.lock(name))...)
	}
}

func (m *refModel) sessionInfo(id session.ID) (api.SessionInfo, bool) {
	s := m.session(id)
	if s == nil {
		return api.SessionInfo{}, false
	}
	info := *s
	for _, l := range m.sortedLocks() {
		if l.holderIdx(id) >= 0 {
			info.Locks = append(info.Locks, l.name)
		}
	}
	for _, kv := range m.kvs {
		if kv.Session == id {
			info.Keys++
		}
	}
	return info, true
}

// ---- locks ----

func (l *refLock) holderIdx(id session.ID) int {
	for i, g := range l.holders {
		if g.Session == id {
			return i
		}
	}
	return -1
}

func (l *refLock) waiterIdx(id session.ID) int {
	for i, w := range l.waiters {
		if w.Session == id {
			return i
		}
	}
	return -1
}

// fits: may a request of mode/limit hold the lock next to its holders?
func (l *refLock) fits(mode api.Mode, limit int) bool {
	for _, g := range l.holders {
		if mode == api.Exclusive || g.Mode != mode {
			return false
		}
	}
	return mode != api.Semaphore || len(l.holders) < limit
}

func (l *refLock) info() api.LockInfo {
	li := api.LockInfo{Name: l.name, DelayUntil: l.delayUntil}
	li.Holders = append(li.Holders, l.holders...)
	sort.Slice(li.Holders, func(i, j int) bool { return li.Holders[i].Token < li.Holders[j].Token })
	li.Waiters = append(li.Waiters, l.waiters...)
	return li
}

func (m *refModel) lock(name string) *refLock {
	for _, l := range m.locks {
		if l.name == name {
			return l
		}
	}
	return nil
}

func (m *refModel) lockOrNew(name string) *refLock {
	if l := m.lock(name); l != nil {
		return l
	}
	l := &refLock{name: name}
	m.locks = append(m.locks, l)
	return l
}

func (m *refModel) sortedLocks() []*refLock {
	ls := append([]*refLock(nil), m.locks...)
	sort.Slice(ls, func(i, j int) bool { return ls[i].name < ls[j].name })
	return ls
}

// grant gives l to session id. The fencing token is the entry's index, or
// one more than the last token if that is larger: unique and increasing
// over all locks.
func (m *refModel) grant(l *refLock, id session.ID, mode api.Mode, limit int, waitID uint64) api.Grant {
	m.lastToken = max(m.index, m.lastToken+1)
	g := api.Grant{Lock: l.name, Session: id, Token: m.lastToken, Mode: mode, Limit: limit, Since: m.now, WaitID: waitID}
	l.holders = append(l.holders, g)
	return g
}

// settle grants waiters strictly from the head of the queue while the head
// fits, unless the lock is in lock-delay.
func (m *refModel) settle(l *refLock) []api.Grant {
	var out []api.Grant
	if l.delayUntil <= m.now {
		for len(l.waiters) > 0 && l.fits(l.waiters[0].Mode, l.waiters[0].Limit) {
			w := l.waiters[0]
			l.waiters = l.waiters[1:]
			out = append(out, m.grant(l, w.Session, w.Mode, w.Limit, w.WaitID))
		}
		if len(l.holders) == 0 && len(l.waiters) == 0 {
			l.delayUntil = 0 // nothing left: the lock is gone
		}
	}
	return out
}

// wake ends the lock-delays that are over at the current time and grants
// their waiters, lock by lock in name order.
func (m *refModel) wake() []api.Grant {
	var out []api.Grant
	for _, l := range m.sortedLocks() {
		if l.delayUntil != 0 && l.delayUntil <= m.now {
			l.delayUntil = 0
			out = append(out, m.settle(l)...)
		}
	}
	return out
}

func (m *refModel) checkKey(key string) *api.Error {
	switch {
	case key == "":
		return &api.Error{Code: api.CodeInvalid}
	case len(key) > m.cfg.Limits.MaxKeyBytes:
		return &api.Error{Code: api.CodeTooLarge}
	}
	return nil
}

func (m *refModel) acquire(a *LockAcquire) *Result {
	if e := m.checkKey(a.Name); e != nil {
		return &Result{Err: e}
	}
	switch {
	case (a.Mode == api.Exclusive || a.Mode == api.Shared) && a.Limit != 0,
		a.Mode == api.Semaphore && a.Limit < 1,
		a.Mode != api.Exclusive && a.Mode != api.Shared && a.Mode != api.Semaphore:
		return refErr(api.CodeInvalid)
	}
	if m.session(a.Session) == nil {
		return refErr(api.CodeSessionNotFound)
	}
	l := m.lockOrNew(a.Name)
	if i := l.holderIdx(a.Session); i >= 0 {
		g := l.holders[i]
		if g.Mode != a.Mode || g.Limit != a.Limit {
			return refErr(api.CodeInvalid)
		}
		return &Result{Grant: &g} // re-acquire: the same grant
	}
	if i := l.waiterIdx(a.Session); i >= 0 {
		w := l.waiters[i]
		return &Result{Wait: &w} // already queued: the same wait
	}
	if a.Mode == api.Semaphore {
		for _, g := range l.holders {
			if g.Mode == api.Semaphore && g.Limit != a.Limit {
				return refErr(api.CodeInvalid)
			}
		}
		for _, w := range l.waiters {
			if w.Mode == api.Semaphore && w.Limit != a.Limit {
				return refErr(api.CodeInvalid)
			}
		}
	}
	inDelay := l.delayUntil > m.now
	if !inDelay && len(l.waiters) == 0 && l.fits(a.Mode, a.Limit) {
		g := m.grant(l, a.Session, a.Mode, a.Limit, 0)
		return &Result{Grant: &g}
	}
	if !a.Wait {
		info := l.info()
		code := api.CodeLockHeld
		if inDelay {
			code = api.CodeLockDelay
		}
		return &Result{Err: &api.Error{Code: code}, Lock: &info}
	}
	if len(l.waiters) >= m.cfg.Limits.MaxWaitersPerLock {
		return refErr(api.CodeLimit)
	}
	w := api.Waiter{Lock: a.Name, Session: a.Session, WaitID: m.index, Mode: a.Mode, Limit: a.Limit, Since: m.now}
	l.waiters = append(l.waiters, w)
	return &Result{Wait: &w}
}

func (m *refModel) release(r *LockRelease) *Result {
	l := m.lock(r.Name)
	if l == nil {
		return refErr(api.CodeStaleToken)
	}
	i := l.holderIdx(r.Session)
	if i < 0 || l.holders[i].Token != r.Token {
		return refErr(api.CodeStaleToken)
	}
	l.holders = append(l.holders[:i], l.holders[i+1:]...)
	return &Result{Granted: m.settle(l)}
}

// cancel withdraws a wait; a wait that was already granted is released
// (its caller gave up). Anything else is a no-op, not an error: the wait
// may have ended with its session.
func (m *refModel) cancel(c *LockCancel) *Result {
	l := m.lock(c.Name)
	if l == nil {
		return &Result{}
	}
	if c.ClientID != 0 {
		if d := m.dedupOf(c.ClientID); d != nil && d.seq != c.Seq {
			return &Result{} // a newer request of that client supersedes it
		}
	}
	if i := l.waiterIdx(c.Session); i >= 0 && l.waiters[i].WaitID == c.WaitID {
		l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
		return &Result{Granted: m.settle(l), Withdrawn: []uint64{c.WaitID}}
	}
	if i := l.holderIdx(c.Session); i >= 0 && c.WaitID != 0 && l.holders[i].WaitID == c.WaitID {
		l.holders = append(l.holders[:i], l.holders[i+1:]...)
		return &Result{Granted: m.settle(l)}
	}
	return &Result{}
}

func (m *refModel) lockInfo(name string) api.LockInfo {
	if l := m.lock(name); l != nil {
		return l.info()
	}
	return api.LockInfo{Name: name}
}

func (m *refModel) lockInfos(prefix string) []api.LockInfo {
	var out []api.LockInfo
	for _, l := range m.sortedLocks() {
		if strings.HasPrefix(l.name, prefix) {
			out = append(out, l.info())
		}
	}
	return out
}

func (m *refModel) checkToken(name string, token uint64) (api.Grant, bool) {
	if l := m.lock(name); l != nil {
		for _, g := range l.holders {
			if g.Token == token {
				return g, true
			}
		}
	}
	return api.Grant{}, false
}

// nextWakeup: the earliest end of a lock-delay that has waiters.
func (m *refModel) nextWakeup() (int64, bool) {
	var at int64
	for _, l := range m.locks {
		if l.delayUntil != 0 && len(l.waiters) > 0 && (at == 0 || l.delayUntil < at) {
			at = l.delayUntil
		}
	}
	return at, at != 0
}

// ---- keys ----

func (m *refModel) kvIdx(key string) int {
	for i := range m.kvs {
		if m.kvs[i].Key == key {
			return i
		}
	}
	return -1
}

func (m *refModel) get(key string) (api.KeyValue, bool) {
	if i := m.kvIdx(key); i >= 0 {
		return m.kvs[i], true
	}
	return api.KeyValue{}, false
}

func (m *refModel) sortedKVs() []api.KeyValue {
	return append([]api.KeyValue(nil), m.kvs...)
}

// list: keys with the prefix, from start on, at most limit (0 or more
// than the list limit means the list limit).
func (m *refModel) list(prefix, start string, limit int) ([]api.KeyValue, bool) {
	if limit <= 0 || limit > m.cfg.Limits.MaxListLimit {
		limit = m.cfg.Limits.MaxListLimit
	}
	var out []api.KeyValue
	for _, kv := range m.kvs {
		if strings.HasPrefix(kv.Key, prefix) && kv.Key >= start {
			if len(out) == limit {
				return out, true
			}
			out = append(out, kv)
		}
	}
	return out, false
}

// matching: the keys a delete or get addresses, in order.
func (m *refModel) matching(key string, prefix bool) []string {
	var out []string
	for _, kv := range m.kvs {
		if kv.Key == key || (prefix && strings.HasPrefix(kv.Key, key)) {
			out = append(out, kv.Key)
		}
	}
	return out
}

func (m *refModel) setKey(key string, value []byte, sess session.ID) api.Event {
	rev := int64(m.index)
	kv := api.KeyValue{Key: key, Value: value, CreateRevision: rev, ModRevision: rev, Version: 1, Session: sess}
	var prev *api.KeyValue
	if i := m.kvIdx(key); i >= 0 {
		p := m.kvs[i]
		prev = &p
		kv.CreateRevision, kv.Version = p.CreateRevision, p.Version+1
		m.kvs[i] = kv
	} else {
		i := 0
		for i < len(m.kvs) && m.kvs[i].Key < key {
			i++
		}
		m.kvs = append(m.kvs[:i], append([]api.KeyValue{kv}, m.kvs[i:]...)...)
	}
	return api.Event{Type: api.EventPut, KV: kv, PrevKV: prev, Revision: rev}
}

func (m *refModel) removeKey(key string) api.Event {
	i := m.kvIdx(key)
	prev := m.kvs[i]
	m.kvs = append(m.kvs[:i], m.kvs[i+1:]...)
	rev := int64(m.index)
	return api.Event{Type: api.EventDelete, KV: api.KeyValue{Key: key, ModRevision: rev}, PrevKV: &prev, Revision: rev}
}

// commit makes a command's changes one revision: the entry's index.
func (m *refModel) commit(evs []api.Event) {
	if len(evs) == 0 {
		return
	}
	m.revision = int64(m.index)
	m.events = append(m.events, evs...)
}

func (m *refModel) checkPut(key string, value []byte, sess session.ID) *api.Error {
	if e := m.checkKey(key); e != nil {
		return e
	}
	if len(value) > m.cfg.Limits.MaxValueBytes {
		return &api.Error{Code: api.CodeTooLarge}
	}
	if sess != 0 && m.session(sess) == nil {
		return &api.Error{Code: api.CodeSessionNotFound}
	}
	return nil
}

func (m *refModel) checkRange(key string, prefix bool) *api.Error {
	if prefix && key == "" {
		return nil
	}
	return m.checkKey(key)
}

func (m *refModel) put(p *Put) *Result {
	if e := m.checkPut(p.Key, p.Value, p.Session); e != nil {
		return &Result{Err: e}
	}
	ev := m.setKey(p.Key, p.Value, p.Session)
	m.commit([]api.Event{ev})
	return &Result{Revision: m.revision, PrevKV: ev.PrevKV}
}

func (m *refModel) del(d *Delete) *Result {
	if e := m.checkRange(d.Key, d.Prefix); e != nil {
		return &Result{Err: e}
	}
	var evs []api.Event
	for _, k := range m.matching(d.Key, d.Prefix) {
		evs = append(evs, m.removeKey(k))
	}
	m.commit(evs)
	res := &Result{Revision: m.revision, Deleted: len(evs)}
	if !d.Prefix && len(evs) == 1 {
		res.PrevKV = evs[0].PrevKV
	}
	return res
}

func (m *refModel) compare(c api.Compare) bool {
	kv, ok := m.get(c.Key)
	var cmp int
	switch c.Target {
	case api.CompareValue:
		if !ok {
			return c.Op == api.NotEqual // a missing key has no value
		}
		cmp = bytes.Compare(kv.Value, c.Value)
	case api.CompareVersion:
		cmp = cmpInt(kv.Version, c.Number)
	case api.CompareCreateRevision:
		cmp = cmpInt(kv.CreateRevision, c.Number)
	case api.CompareModRevision:
		cmp = cmpInt(kv.ModRevision, c.Number)
	case api.CompareExists:
		e := int64(0)
		if ok {
			e = 1
		}
		cmp = cmpInt(e, c.Number)
	}
	switch c.Op {
	case api.Equal:
		return cmp == 0
	case api.NotEqual:
		return cmp != 0
	case api.Less:
		return cmp < 0
	case api.Greater:
		return cmp > 0
	}
	return false
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// txn: every compare and operation is checked first (a transaction
// applies whole or not at all); then the branch runs, its changes sharing
// one revision.
func (m *refModel) txn(t *Txn) *Result {
	if len(t.Compares)+len(t.Then)+len(t.Else) > m.cfg.Limits.MaxTxnOps {
		return refErr(api.CodeLimit)
	}
	for _, c := range t.Compares {
		if e := m.checkKey(c.Key); e != nil {
			return &Result{Err: e}
		}
		if c.Target < api.CompareValue || c.Target > api.CompareExists || c.Op < api.Equal || c.Op > api.Greater {
			return refErr(api.CodeInvalid)
		}
	}
	for _, op := range append(append([]api.Op(nil), t.Then...), t.Else...) {
		var e *api.Error
		switch op.Type {
		case api.OpPut:
			e = m.checkPut(op.Key, op.Value, op.Session)
		case api.OpDelete, api.OpGet:
			e = m.checkRange(op.Key, op.Prefix)
		default:
			e = &api.Error{Code: api.CodeInvalid}
		}
		if e != nil {
			return &Result{Err: e}
		}
	}
	ok := true
	for _, c := range t.Compares {
		ok = ok && m.compare(c)
	}
	ops := t.Then
	if !ok {
		ops = t.Else
	}
	res := &Result{Succeeded: ok}
	var evs []api.Event
	for _, op := range ops {
		r := api.OpResult{Type: op.Type}
		switch op.Type {
		case api.OpPut:
			ev := m.setKey(op.Key, op.Value, op.Session)
			evs = append(evs, ev)
			r.PrevKV = ev.PrevKV
		case api.OpDelete:
			for _, k := range m.matching(op.Key, op.Prefix) {
				evs = append(evs, m.removeKey(k))
				r.Deleted++
			}
		case api.OpGet:
			limit := op.Limit
			if limit <= 0 || limit > m.cfg.Limits.MaxListLimit {
				limit = m.cfg.Limits.MaxListLimit
			}
			for _, k := range m.matching(op.Key, op.Prefix) {
				if len(r.KVs) == limit {
					r.More = true
					break
				}
				kv, _ := m.get(k)
				r.KVs = append(r.KVs, kv)
			}
		}
		res.Ops = append(res.Ops, r)
	}
	m.commit(evs)
	res.Revision = m.revision
	return res
}

// events: the watch events of revision ≥ from for key (or the prefix),
// whole revisions, stopping before a revision once limit events are
// collected (limit 0: no limit); next is the revision to ask from next.
func (m *refModel) eventsSince(from int64, key string, prefix bool, limit int) ([]api.Event, int64, *api.Error) {
	if from <= m.compacted {
		return nil, 0, &api.Error{Code: api.CodeCompacted}
	}
	var out []api.Event
	next := from
	for i := 0; i < len(m.events); {
		rev := m.events[i].Revision
		if rev < from {
			i++
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		for ; i < len(m.events) && m.events[i].Revision == rev; i++ {
			e := m.events[i]
			if e.KV.Key == key || (prefix && strings.HasPrefix(e.KV.Key, key)) {
				out = append(out, e)
			}
		}
		next = rev + 1
	}
	return out, next, nil
}
