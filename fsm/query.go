package fsm

import (
	"strings"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// ReadState says where a read was served: the last applied index, the KV
// revision, and the state machine's time.
type ReadState struct {
	Index    uint64
	Revision int64
	Now      int64
}

func (f *FSM) readState() ReadState {
	return ReadState{Index: f.index, Revision: f.revision, Now: f.now}
}

// Applied returns the index of the last applied entry.
func (f *FSM) Applied() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Get returns a key.
func (f *FSM) Get(key string) (api.KeyValue, bool, ReadState) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	kv, ok := f.kv[key]
	if !ok {
		return api.KeyValue{}, false, f.readState()
	}
	return *kv, true, f.readState()
}

// List returns up to limit keys with the prefix, from start on, and
// whether more follow.
func (f *FSM) List(prefix, start string, limit int) ([]api.KeyValue, bool, ReadState) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if limit <= 0 || limit > f.cfg.Limits.MaxListLimit {
		limit = f.cfg.Limits.MaxListLimit
	}
	var out []api.KeyValue
	more := false
	f.keys.withPrefix(prefix, start, func(k string) bool {
		if len(out) == limit {
			more = true
			return false
		}
		out = append(out, *f.kv[k])
		return true
	})
	return out, more, f.readState()
}

// Session returns one session.
func (f *FSM) Session(id session.ID) (api.SessionInfo, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, ok := f.sessions[id]
	if !ok {
		return api.SessionInfo{}, false
	}
	return s.snapshotInfo(), true
}

// Sessions returns every session by id.
func (f *FSM) Sessions() []api.SessionInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.SessionInfo, 0, len(f.sessions))
	for _, id := range sortedKeys(f.sessions) {
		out = append(out, f.sessions[id].snapshotInfo())
	}
	return out
}

// Lock describes one lock; a lock nobody holds, awaits or delays is
// reported empty.
func (f *FSM) Lock(name string) api.LockInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if l, ok := f.locks[name]; ok {
		return l.info()
	}
	return api.LockInfo{Name: name}
}

// Locks describes every lock whose name has the prefix, by name.
func (f *FSM) Locks(prefix string) []api.LockInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []api.LockInfo
	for _, name := range sortedKeys(f.locks) {
		if strings.HasPrefix(name, prefix) {
			out = append(out, f.locks[name].info())
		}
	}
	return out
}

// CheckToken reports whether token is a current grant of the lock, with
// that grant.
func (f *FSM) CheckToken(name string, token uint64) (api.Grant, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if l, ok := f.locks[name]; ok {
		for _, g := range l.holders {
			if g.Token == token {
				return *g, true
			}
		}
	}
	return api.Grant{}, false
}

// Events returns watch events for key (or the prefix) from revision from,
// at most about limit (whole revisions), and the revision to continue
// from; a compacted revision gives a CodeCompacted error naming the oldest
// available one.
func (f *FSM) Events(from int64, key string, prefix bool, limit int) ([]api.Event, int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	evs, next, err := f.history.since(from, key, prefix, limit)
	if err != nil {
		return nil, 0, err
	}
	if next <= f.revision {
		next = max(next, from)
	}
	return evs, next, nil
}

// NextWakeup returns the earliest end of a lock-delay that has waiters,
// so the leader can propose a tick entry then.
func (f *FSM) NextWakeup() (int64, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var at int64
	for _, name := range sortedKeys(f.delayed) {
		l := f.locks[name]
		if l != nil && len(l.waiters) > 0 && (at == 0 || l.delayUntil < at) {
			at = l.delayUntil
		}
	}
	return at, at != 0
}

// Stats counts what the state machine holds.
type Stats struct {
	Keys, Sessions, Locks, Waiters, HistoryEvents, DedupClients int
	Revision                                                    int64
	Index                                                       uint64
}

// Stats returns counts for metrics and status.
func (f *FSM) Stats() Stats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	waiters := 0
	for _, l := range f.locks {
		waiters += len(l.waiters)
	}
	return Stats{Keys: len(f.kv), Sessions: len(f.sessions), Locks: len(f.locks), Waiters: waiters,
		HistoryEvents: len(f.history.live()), DedupClients: len(f.dedup), Revision: f.revision, Index: f.index}
}
