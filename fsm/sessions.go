package fsm

import (
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

type sessionState struct {
	info  api.SessionInfo
	locks map[string]bool   // locks held
	waits map[string]uint64 // lock name → wait id
	keys  map[string]bool   // ephemeral keys
}

func newSessionState(info api.SessionInfo) *sessionState {
	return &sessionState{info: info, locks: map[string]bool{}, waits: map[string]uint64{}, keys: map[string]bool{}}
}

func (s *sessionState) snapshotInfo() api.SessionInfo {
	info := s.info
	info.Locks = sortedKeys(s.locks)
	info.Keys = len(s.keys)
	return info
}

func (f *FSM) createSession(client uint64, c *SessionCreate) *Result {
	ttl, delay := time.Duration(c.TTL), time.Duration(c.LockDelay)
	r := f.cfg.Rules
	if ttl < r.MinTTL || ttl > r.MaxTTL {
		return errResult(api.Errorf(api.CodeInvalid, "session TTL %v is outside [%v, %v]", ttl, r.MinTTL, r.MaxTTL))
	}
	if delay < 0 || delay > r.MaxLockDelay {
		return errResult(api.Errorf(api.CodeInvalid, "lock-delay %v is outside [0s, %v]", delay, r.MaxLockDelay))
	}
	if len(c.Name) > f.cfg.Limits.MaxLabelBytes {
		return errResult(api.Errorf(api.CodeTooLarge, "session name of %d bytes exceeds the %d-byte limit", len(c.Name), f.cfg.Limits.MaxLabelBytes))
	}
	if client != 0 && f.clientSessions[client] >= f.cfg.Limits.MaxSessionsPerClient {
		return errResult(api.Errorf(api.CodeLimit, "client %x already has %d sessions, the limit; destroy unused ones", client, f.clientSessions[client]))
	}
	id := session.ID(f.index)
	s := newSessionState(api.SessionInfo{
		ID: id, TTL: c.TTL, LockDelay: c.LockDelay, Name: c.Name, ClientID: client,
		CreatedAt: f.now, ExpiresAt: f.now + c.TTL,
	})
	f.sessions[id] = s
	if client != 0 {
		f.clientSessions[client]++
	}
	info := s.snapshotInfo()
	return &Result{Session: &info}
}

func (f *FSM) sessionNotFound(id session.ID) *api.Error {
	return api.Errorf(api.CodeSessionNotFound, "session %s does not exist (expired, destroyed, or never created); create a new one", id)
}

func (f *FSM) destroySession(id session.ID) *Result {
	s, ok := f.sessions[id]
	if !ok {
		return errResult(f.sessionNotFound(id))
	}
	res := &Result{}
	f.commitEnded(f.endSession(s, false, res), res)
	return res
}

// commitEnded commits the events of ended sessions as one revision and
// reports it, if any key was deleted.
func (f *FSM) commitEnded(events []api.Event, res *Result) {
	if len(events) > 0 {
		f.commitEvents(events)
		res.Revision = f.revision
	}
}

func (f *FSM) expireSessions(ids []session.ID) *Result {
	res := &Result{}
	var events []api.Event
	for _, id := range ids {
		// An id that already ended (destroyed meanwhile, or in an earlier
		// expiry batch) is skipped.
		if s, ok := f.sessions[id]; ok {
			events = append(events, f.endSession(s, true, res)...)
		}
	}
	// One revision, added to the history at once: a batch is one change.
	f.commitEnded(events, res)
	return res
}

func (f *FSM) checkpointSessions(ds []SessionDeadline) *Result {
	res := &Result{}
	for _, d := range ds {
		if s, ok := f.sessions[d.ID]; ok {
			s.info.ExpiresAt = d.ExpiresAt
			res.Checkpointed = append(res.Checkpointed, d)
		}
	}
	return res
}

// endSession releases the session's locks (into lock-delay if it expired),
// drops its queued waits, deletes its ephemeral keys and grants what that
// frees — all in this one apply. It returns the deletion events for the
// caller to commit as one revision.
func (f *FSM) endSession(s *sessionState, expired bool, res *Result) []api.Event {
	id := s.info.ID
	touched := map[string]bool{}
	for _, name := range sortedKeys(s.locks) {
		l := f.locks[name]
		delete(l.holders, id)
		if expired && s.info.LockDelay > 0 {
			until := f.now + s.info.LockDelay
			if until > l.delayUntil {
				l.delayUntil = until
			}
			f.delayed[name] = true
			if f.nextWake == 0 || until < f.nextWake {
				f.nextWake = until
			}
		}
		touched[name] = true
	}
	for _, name := range sortedKeys(s.waits) {
		l := f.locks[name]
		l.removeWait(s.waits[name])
		touched[name] = true
	}
	var events []api.Event
	for _, k := range sortedKeys(s.keys) {
		events = append(events, f.removeKey(k))
	}
	delete(f.sessions, id)
	if c := s.info.ClientID; c != 0 {
		if f.clientSessions[c]--; f.clientSessions[c] <= 0 {
			delete(f.clientSessions, c)
		}
	}
	res.Ended = append(res.Ended, id)
	for _, name := range sortedKeys(touched) {
		f.settle(f.locks[name], res)
	}
	return events
}
