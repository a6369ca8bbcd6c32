package fsm

import (
	"sort"
	"strings"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

type lockState struct {
	name       string
	holders    map[session.ID]*api.Grant
	waiters    []*api.Waiter // FIFO
	delayUntil int64
}

func (l *lockState) removeWait(waitID uint64) bool {
	for i, w := range l.waiters {
		if w.WaitID == waitID {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// compatible reports whether a request of mode/limit may be granted next
// to the current holders.
func (l *lockState) compatible(mode api.Mode, limit int) bool {
	if len(l.holders) == 0 {
		return true
	}
	for _, g := range l.holders {
		switch {
		case mode == api.Exclusive || g.Mode == api.Exclusive:
			return false
		case mode != g.Mode:
			return false
		}
	}
	if mode == api.Semaphore {
		return len(l.holders) < limit
	}
	return true
}

// limitConflict names a semaphore limit that differs from the lock's.
func (l *lockState) limitOf() (int, bool) {
	for _, g := range l.holders {
		if g.Mode == api.Semaphore {
			return g.Limit, true
		}
	}
	for _, w := range l.waiters {
		if w.Mode == api.Semaphore {
			return w.Limit, true
		}
	}
	return 0, false
}

func (l *lockState) info() api.LockInfo {
	li := api.LockInfo{Name: l.name, DelayUntil: l.delayUntil}
	for _, g := range l.holders {
		li.Holders = append(li.Holders, *g)
	}
	sort.Slice(li.Holders, func(i, j int) bool { return li.Holders[i].Token < li.Holders[j].Token })
	for _, w := range l.waiters {
		li.Waiters = append(li.Waiters, *w)
	}
	return li
}

func (l *lockState) empty(now int64) bool {
	return len(l.holders) == 0 && len(l.waiters) == 0 && l.delayUntil <= now
}

// nextToken returns a fencing token above every token issued before, by
// any lock: normally the granting entry's index.
func (f *FSM) nextToken() uint64 {
	f.lastToken = max(f.index, f.lastToken+1)
	return f.lastToken
}

func (f *FSM) checkAcquire(a *LockAcquire) *api.Error {
	if err := f.cfg.Limits.CheckKey("lock name", a.Name); err != nil {
		return asAPIError(err)
	}
	switch a.Mode {
	case api.Exclusive, api.Shared:
		if a.Limit != 0 {
			return api.Errorf(api.CodeInvalid, "a limit (%d) applies only to semaphores, not to %s locks", a.Limit, a.Mode)
		}
	case api.Semaphore:
		if a.Limit < 1 {
			return api.Errorf(api.CodeInvalid, "semaphore limit %d must be at least 1", a.Limit)
		}
	default:
		return api.Errorf(api.CodeInvalid, "unknown lock mode %d", uint8(a.Mode))
	}
	return nil
}

func (f *FSM) acquire(a *LockAcquire) *Result {
	if err := f.checkAcquire(a); err != nil {
		return errResult(err)
	}
	s, ok := f.sessions[a.Session]
	if !ok {
		return errResult(f.sessionNotFound(a.Session))
	}
	l := f.locks[a.Name]
	if l == nil {
		l = &lockState{name: a.Name, holders: map[session.ID]*api.Grant{}}
		f.locks[a.Name] = l
	}
	if g, held := l.holders[a.Session]; held {
		if g.Mode != a.Mode || g.Limit != a.Limit {
			return errResult(api.Errorf(api.CodeInvalid, "session %s already holds lock %q as %s; release it before asking as %s", a.Session, a.Name, g.Mode, a.Mode))
		}
		gc := *g
		return &Result{Grant: &gc}
	}
	if waitID, waiting := s.waits[a.Name]; waiting {
		for _, w := range l.waiters {
			if w.WaitID == waitID {
				wc := *w
				return &Result{Wait: &wc}
			}
		}
	}
	if limit, ok := l.limitOf(); ok && a.Mode == api.Semaphore && limit != a.Limit {
		return errResult(api.Errorf(api.CodeInvalid, "lock %q is a semaphore of limit %d; asked with limit %d", a.Name, limit, a.Limit))
	}
	inDelay := l.delayUntil > f.now
	if !inDelay && len(l.waiters) == 0 && l.compatible(a.Mode, a.Limit) {
		g := f.grant(l, s, a.Mode, a.Limit, 0)
		return &Result{Grant: &g}
	}
	if !a.Wait {
		info := l.info()
		res := &Result{Lock: &info}
		if inDelay {
			res.Err = api.Errorf(api.CodeLockDelay, "lock %q is in lock-delay until %s after its holder's session expired; retry then, or acquire with --wait",
				a.Name, time.Unix(0, l.delayUntil).UTC().Format(time.RFC3339Nano))
		} else {
			res.Err = api.Errorf(api.CodeLockHeld, "lock %q is %s; retry with --wait", a.Name, describeHolders(l))
		}
		f.dropIfEmpty(l)
		return res
	}
	if len(l.waiters) >= f.cfg.Limits.MaxWaitersPerLock {
		return errResult(api.Errorf(api.CodeLimit, "lock %q already has %d waiters, the limit", a.Name, len(l.waiters)))
	}
	w := &api.Waiter{Lock: a.Name, Session: a.Session, WaitID: f.index, Mode: a.Mode, Limit: a.Limit, Since: f.now}
	l.waiters = append(l.waiters, w)
	s.waits[a.Name] = w.WaitID
	wc := *w
	return &Result{Wait: &wc}
}

func describeHolders(l *lockState) string {
	info := l.info()
	if len(info.Holders) == 0 {
		return "queued behind earlier waiters"
	}
	var parts []string
	for _, g := range info.Holders {
		parts = append(parts, "session "+g.Session.String()+" (token "+uitoa(g.Token)+")")
	}
	return "held by " + strings.Join(parts, ", ")
}

func uitoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// grant records a grant to s and returns it.
func (f *FSM) grant(l *lockState, s *sessionState, mode api.Mode, limit int, waitID uint64) api.Grant {
	g := &api.Grant{Lock: l.name, Session: s.info.ID, Token: f.nextToken(), Mode: mode, Limit: limit, Since: f.now, WaitID: waitID}
	l.holders[s.info.ID] = g
	s.locks[l.name] = true
	return *g
}

func (f *FSM) release(r *LockRelease) *Result {
	l := f.locks[r.Name]
	var g *api.Grant
	if l != nil {
		g = l.holders[r.Session]
	}
	if g == nil || g.Token != r.Token {
		current := "it does not hold the lock"
		if g != nil {
			current = "its current grant has token " + uitoa(g.Token)
		}
		return errResult(api.Errorf(api.CodeStaleToken, "token %d is not session %s's current grant of lock %q: %s", r.Token, r.Session, r.Name, current))
	}
	res := &Result{}
	f.unhold(l, r.Session)
	f.settle(l, res)
	return res
}

func (f *FSM) unhold(l *lockState, id session.ID) {
	delete(l.holders, id)
	if s, ok := f.sessions[id]; ok {
		delete(s.locks, l.name)
	}
}

func (f *FSM) cancel(c *LockCancel) *Result {
	l := f.locks[c.Name]
	res := &Result{}
	if l == nil {
		return res
	}
	if c.ClientID != 0 {
		if d, ok := f.dedup[c.ClientID]; ok && d.Seq != c.Seq {
			return res // superseded by a newer request of that client
		}
	}
	if s, ok := f.sessions[c.Session]; ok && s.waits[c.Name] == c.WaitID && l.removeWait(c.WaitID) {
		delete(s.waits, c.Name)
		res.Withdrawn = append(res.Withdrawn, c.WaitID)
		// The head waiter leaving may let the next ones in.
		f.settle(l, res)
		return res
	}
	if g := l.holders[c.Session]; g != nil && c.WaitID != 0 && g.WaitID == c.WaitID {
		// The wait was granted before the cancel arrived: the caller gave
		// up and will never use it, so release it rather than leak it.
		f.unhold(l, c.Session)
		f.settle(l, res)
	}
	return res
}

// settle grants queued waiters in FIFO order while they fit, unless the
// lock is in lock-delay; drops the lock record once nothing refers to it.
func (f *FSM) settle(l *lockState, res *Result) {
	if l.delayUntil > f.now {
		return
	}
	for len(l.waiters) > 0 {
		w := l.waiters[0]
		s, alive := f.sessions[w.Session]
		if !alive {
			// Ending a session removes its waits, so this is a broken
			// invariant; skip rather than grant to the dead (etcd#11456).
			l.waiters = l.waiters[1:]
			continue
		}
		if !l.compatible(w.Mode, w.Limit) {
			break
		}
		l.waiters = l.waiters[1:]
		delete(s.waits, l.name)
		res.Granted = append(res.Granted, f.grant(l, s, w.Mode, w.Limit, w.WaitID))
	}
	f.dropIfEmpty(l)
}

func (f *FSM) dropIfEmpty(l *lockState) {
	if l.empty(f.now) {
		delete(f.locks, l.name)
		delete(f.delayed, l.name)
	}
}

// wakeDelayed ends lock-delays whose time has come (by this entry's time)
// and grants their waiters.
func (f *FSM) wakeDelayed(res *Result) {
	if f.nextWake == 0 || f.now < f.nextWake {
		return
	}
	f.nextWake = 0
	for _, name := range sortedKeys(f.delayed) {
		l := f.locks[name]
		if l == nil {
			delete(f.delayed, name)
			continue
		}
		if l.delayUntil > f.now {
			if f.nextWake == 0 || l.delayUntil < f.nextWake {
				f.nextWake = l.delayUntil
			}
			continue
		}
		l.delayUntil = 0
		delete(f.delayed, name)
		f.settle(l, res)
	}
}
