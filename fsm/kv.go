package fsm

import (
	"bytes"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

func cloneKV(kv *api.KeyValue) *api.KeyValue {
	if kv == nil {
		return nil
	}
	c := *kv
	return &c
}

// setKey writes key at the current entry (revision = index) and returns
// its event. Values are never modified in place, so sharing them with
// events and results is safe.
func (f *FSM) setKey(key string, value []byte, sess session.ID) api.Event {
	rev := int64(f.index)
	old := f.kv[key]
	kv := &api.KeyValue{Key: key, Value: value, CreateRevision: rev, ModRevision: rev, Version: 1, Session: sess}
	if old != nil {
		kv.CreateRevision = old.CreateRevision
		kv.Version = old.Version + 1
		if old.Session != 0 && old.Session != sess {
			if s, ok := f.sessions[old.Session]; ok {
				delete(s.keys, key)
			}
		}
	} else {
		f.keys.insert(key)
	}
	if sess != 0 {
		f.sessions[sess].keys[key] = true
	}
	f.kv[key] = kv
	return api.Event{Type: api.EventPut, KV: *kv, PrevKV: cloneKV(old), Revision: rev}
}

// removeKey deletes an existing key and returns its event.
func (f *FSM) removeKey(key string) api.Event {
	rev := int64(f.index)
	old := f.kv[key]
	delete(f.kv, key)
	f.keys.remove(key)
	if old.Session != 0 {
		if s, ok := f.sessions[old.Session]; ok {
			delete(s.keys, key)
		}
	}
	return api.Event{Type: api.EventDelete, KV: api.KeyValue{Key: key, ModRevision: rev}, PrevKV: cloneKV(old), Revision: rev}
}

// commitEvents makes a batch of changes one revision and records them.
func (f *FSM) commitEvents(events []api.Event) {
	if len(events) == 0 {
		return
	}
	f.revision = int64(f.index)
	f.history.add(events)
}

func (f *FSM) checkPut(key string, value []byte, sess session.ID) *api.Error {
	if err := f.cfg.Limits.CheckKey("key", key); err != nil {
		return asAPIError(err)
	}
	if err := f.cfg.Limits.CheckValue(value); err != nil {
		return asAPIError(err)
	}
	if sess != 0 {
		if _, ok := f.sessions[sess]; !ok {
			return api.Errorf(api.CodeSessionNotFound, "cannot bind key %q to session %s: the session does not exist", key, sess)
		}
	}
	return nil
}

func (f *FSM) put(p *Put) *Result {
	if err := f.checkPut(p.Key, p.Value, p.Session); err != nil {
		return errResult(err)
	}
	ev := f.setKey(p.Key, p.Value, p.Session)
	f.commitEvents([]api.Event{ev})
	return &Result{Revision: f.revision, PrevKV: ev.PrevKV}
}

// matchingKeys returns the keys a delete or get addresses, in order.
func (f *FSM) matchingKeys(key string, prefix bool, limit int) (keys []string, more bool) {
	if !prefix {
		if _, ok := f.kv[key]; ok {
			return []string{key}, false
		}
		return nil, false
	}
	f.keys.withPrefix(key, "", func(k string) bool {
		if limit > 0 && len(keys) == limit {
			more = true
			return false
		}
		keys = append(keys, k)
		return true
	})
	return keys, more
}

func (f *FSM) checkDelete(key string, prefix bool) *api.Error {
	if prefix && key == "" {
		return nil // the whole keyspace
	}
	if err := f.cfg.Limits.CheckKey("key", key); err != nil {
		return asAPIError(err)
	}
	return nil
}

func (f *FSM) deleteKeys(d *Delete) *Result {
	if err := f.checkDelete(d.Key, d.Prefix); err != nil {
		return errResult(err)
	}
	keys, _ := f.matchingKeys(d.Key, d.Prefix, 0)
	events := make([]api.Event, 0, len(keys))
	for _, k := range keys {
		events = append(events, f.removeKey(k))
	}
	f.commitEvents(events)
	res := &Result{Revision: f.revision, Deleted: len(keys)}
	if !d.Prefix && len(events) == 1 {
		res.PrevKV = events[0].PrevKV
	}
	return res
}

func (f *FSM) checkTxn(t *Txn) *api.Error {
	n := len(t.Compares) + len(t.Then) + len(t.Else)
	if n > f.cfg.Limits.MaxTxnOps {
		return api.Errorf(api.CodeLimit, "transaction has %d compares and operations; the limit is %d", n, f.cfg.Limits.MaxTxnOps)
	}
	for _, c := range t.Compares {
		if err := f.cfg.Limits.CheckKey("compare key", c.Key); err != nil {
			return asAPIError(err)
		}
		if c.Target < api.CompareValue || c.Target > api.CompareExists || c.Op < api.Equal || c.Op > api.Greater {
			return api.Errorf(api.CodeInvalid, "compare on %q has unknown target %d or operator %d", c.Key, c.Target, c.Op)
		}
	}
	for _, ops := range [][]api.Op{t.Then, t.Else} {
		for _, op := range ops {
			var err *api.Error
			switch op.Type {
			case api.OpPut:
				err = f.checkPut(op.Key, op.Value, op.Session)
			case api.OpDelete, api.OpGet:
				err = f.checkDelete(op.Key, op.Prefix)
			default:
				err = api.Errorf(api.CodeInvalid, "unknown transaction operation %d on %q", op.Type, op.Key)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *FSM) compare(c api.Compare) bool {
	kv := f.kv[c.Key]
	if c.Target == api.CompareValue {
		if kv == nil {
			return c.Op == api.NotEqual
		}
		return cmpResult(bytes.Compare(kv.Value, c.Value), c.Op)
	}
	var have int64
	switch c.Target {
	case api.CompareVersion:
		if kv != nil {
			have = kv.Version
		}
	case api.CompareCreateRevision:
		if kv != nil {
			have = kv.CreateRevision
		}
	case api.CompareModRevision:
		if kv != nil {
			have = kv.ModRevision
		}
	case api.CompareExists:
		if kv != nil {
			have = 1
		}
	}
	switch {
	case have < c.Number:
		return cmpResult(-1, c.Op)
	case have > c.Number:
		return cmpResult(1, c.Op)
	}
	return cmpResult(0, c.Op)
}

func cmpResult(c int, op api.CompareOp) bool {
	switch op {
	case api.Equal:
		return c == 0
	case api.NotEqual:
		return c != 0
	case api.Less:
		return c < 0
	case api.Greater:
		return c > 0
	}
	return false
}

// txn checks every operation first, so a transaction applies whole or not
// at all; then evaluates the compares and runs one branch, its changes
// sharing one revision.
func (f *FSM) txn(t *Txn) *Result {
	if err := f.checkTxn(t); err != nil {
		return errResult(err)
	}
	ok := true
	for _, c := range t.Compares {
		if !f.compare(c) {
			ok = false
			break
		}
	}
	ops := t.Then
	if !ok {
		ops = t.Else
	}
	res := &Result{Succeeded: ok, Ops: make([]api.OpResult, 0, len(ops))}
	var events []api.Event
	for _, op := range ops {
		r := api.OpResult{Type: op.Type}
		switch op.Type {
		case api.OpPut:
			ev := f.setKey(op.Key, op.Value, op.Session)
			r.PrevKV = ev.PrevKV
			events = append(events, ev)
		case api.OpDelete:
			keys, _ := f.matchingKeys(op.Key, op.Prefix, 0)
			for _, k := range keys {
				events = append(events, f.removeKey(k))
			}
			r.Deleted = len(keys)
		case api.OpGet:
			limit := op.Limit
			if limit <= 0 || limit > f.cfg.Limits.MaxListLimit {
				limit = f.cfg.Limits.MaxListLimit
			}
			keys, more := f.matchingKeys(op.Key, op.Prefix, limit)
			for _, k := range keys {
				r.KVs = append(r.KVs, *f.kv[k])
			}
			r.More = more
		}
		res.Ops = append(res.Ops, r)
	}
	f.commitEvents(events)
	res.Revision = f.revision
	return res
}
