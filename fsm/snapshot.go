package fsm

import (
	"bufio"
	"fmt"
	"io"
	"sort"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// snapshotVersion is the layout of snapshotState.
const snapshotVersion = 1

// snapshotState is the whole state in a map-free, sorted form, so that two
// replicas that applied the same entries write byte-identical snapshots.
// What can be derived (a session's locks, waits and keys; counters) is not
// stored but rebuilt on restore.
type snapshotState struct {
	Version        uint8             `codec:"v"`
	Index          uint64            `codec:"i"`
	Now            int64             `codec:"now"`
	Revision       int64             `codec:"rev"`
	LastToken      uint64            `codec:"tok"`
	NextDedupSweep int64             `codec:"sweep"`
	KVs            []api.KeyValue    `codec:"kv"`
	Sessions       []api.SessionInfo `codec:"s"`
	Locks          []api.LockInfo    `codec:"l"`
	Events         []api.Event       `codec:"ev"`
	Compacted      int64             `codec:"cmp"`
	Dedup          []snapshotDedup   `codec:"dd"`
}

type snapshotDedup struct {
	Client   uint64  `codec:"c"`
	Seq      uint64  `codec:"q"`
	Result   *Result `codec:"r"`
	LastSeen int64   `codec:"t"`
}

// capture copies the state under the read lock; values are shared, as
// they are never modified in place.
func (f *FSM) capture() *snapshotState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := &snapshotState{
		Version: snapshotVersion, Index: f.index, Now: f.now, Revision: f.revision, LastToken: f.lastToken,
		NextDedupSweep: f.nextDedupSweep, Compacted: f.history.compacted,
		KVs:      make([]api.KeyValue, 0, len(f.kv)),
		Sessions: make([]api.SessionInfo, 0, len(f.sessions)),
		Events:   append([]api.Event(nil), f.history.live()...),
	}
	f.keys.ascend("", func(k string) bool {
		st.KVs = append(st.KVs, *f.kv[k])
		return true
	})
	for _, id := range sortedKeys(f.sessions) {
		info := f.sessions[id].info
		info.Locks, info.Keys = nil, 0
		st.Sessions = append(st.Sessions, info)
	}
	for _, name := range sortedKeys(f.locks) {
		st.Locks = append(st.Locks, f.locks[name].info())
	}
	for _, c := range sortedKeys(f.dedup) {
		d := f.dedup[c]
		st.Dedup = append(st.Dedup, snapshotDedup{Client: c, Seq: d.Seq, Result: d.Result, LastSeen: d.LastSeen})
	}
	return st
}

// Snapshot writes the whole state to w. The state is copied under the
// read lock first, so applies are not held up while w is written.
func (f *FSM) Snapshot(w io.Writer) error { return f.CaptureSnapshot()(w) }

// CaptureSnapshot copies the state now (under the read lock: one pass
// over the keys, sessions and locks, sharing their values, which are never
// modified in place) and returns a function that writes that copy. The
// write may run on another goroutine, concurrently with later applies: it
// describes the state as of the last entry applied before the capture.
func (f *FSM) CaptureSnapshot() func(io.Writer) error {
	st := f.capture()
	return func(w io.Writer) error { return f.writeSnapshot(st, w) }
}

func (f *FSM) writeSnapshot(st *snapshotState, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := codec.NewEncoder(bw, f.codec.h).Encode(st); err != nil {
		return fmt.Errorf("encoding fsm snapshot at index %d: %w", st.Index, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing fsm snapshot at index %d: %w", st.Index, err)
	}
	return nil
}

// Restore replaces the state with a snapshot's. On error the state is
// unchanged.
func (f *FSM) Restore(r io.Reader) (err error) {
	st := &snapshotState{}
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("decoding fsm snapshot: %v", p)
			}
		}()
		err = codec.NewDecoder(bufio.NewReaderSize(r, 64<<10), f.codec.h).Decode(st)
	}()
	if err != nil {
		return fmt.Errorf("decoding fsm snapshot: %w", err)
	}
	if st.Version != snapshotVersion {
		return fmt.Errorf("fsm snapshot version %d is not supported (this node reads version %d)", st.Version, snapshotVersion)
	}
	nf := &FSM{cfg: f.cfg, codec: f.codec}
	nf.reset()
	if err := nf.load(st); err != nil {
		return fmt.Errorf("fsm snapshot at index %d is inconsistent: %w", st.Index, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index, f.now, f.revision, f.lastToken, f.nextDedupSweep = nf.index, nf.now, nf.revision, nf.lastToken, nf.nextDedupSweep
	f.kv, f.keys, f.sessions, f.clientSessions = nf.kv, nf.keys, nf.sessions, nf.clientSessions
	f.locks, f.delayed, f.nextWake, f.history, f.dedup = nf.locks, nf.delayed, nf.nextWake, nf.history, nf.dedup
	return nil
}

// load rebuilds state (on a fresh FSM) from st, checking references.
func (f *FSM) load(st *snapshotState) error {
	f.index, f.now, f.revision, f.lastToken, f.nextDedupSweep = st.Index, st.Now, st.Revision, st.LastToken, st.NextDedupSweep
	for _, info := range st.Sessions {
		f.sessions[info.ID] = newSessionState(info)
		if info.ClientID != 0 {
			f.clientSessions[info.ClientID]++
		}
	}
	for i := range st.KVs {
		kv := st.KVs[i]
		if kv.Session != 0 {
			s, ok := f.sessions[kv.Session]
			if !ok {
				return fmt.Errorf("key %q is bound to missing session %s", kv.Key, kv.Session)
			}
			s.keys[kv.Key] = true
		}
		f.kv[kv.Key] = &kv
		f.keys.insert(kv.Key)
	}
	for _, li := range st.Locks {
		l := &lockState{name: li.Name, holders: map[session.ID]*api.Grant{}, delayUntil: li.DelayUntil}
		for i := range li.Holders {
			g := li.Holders[i]
			s, ok := f.sessions[g.Session]
			if !ok {
				return fmt.Errorf("lock %q is held by missing session %s", li.Name, g.Session)
			}
			l.holders[g.Session] = &g
			s.locks[li.Name] = true
		}
		for i := range li.Waiters {
			w := li.Waiters[i]
			s, ok := f.sessions[w.Session]
			if !ok {
				return fmt.Errorf("lock %q is awaited by missing session %s", li.Name, w.Session)
			}
			l.waiters = append(l.waiters, &w)
			s.waits[li.Name] = w.WaitID
		}
		f.locks[li.Name] = l
		if l.delayUntil > 0 {
			f.delayed[li.Name] = true
			if f.nextWake == 0 || l.delayUntil < f.nextWake {
				f.nextWake = l.delayUntil
			}
		}
	}
	if !sort.SliceIsSorted(st.Events, func(i, j int) bool { return st.Events[i].Revision < st.Events[j].Revision }) {
		return fmt.Errorf("watch history is out of revision order")
	}
	f.history.events = st.Events
	f.history.compacted = st.Compacted
	for i := range st.Events {
		f.history.bytes += eventSize(&st.Events[i])
	}
	for _, d := range st.Dedup {
		f.dedup[d.Client] = &dedupEntry{Seq: d.Seq, Result: d.Result, LastSeen: d.LastSeen}
	}
	return nil
}
