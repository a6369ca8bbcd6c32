package client

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// The fake cluster's handlers and state changes: a minimal model of the
// server's semantics (see fake_test.go).
// register binds every method of the client API.
func (n *fakeNode) register(t *testing.T) {
	s := n.srv
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rpc.Handle(s, rpc.Method(api.MethodSessionCreate), "session.create", func(ctx context.Context, req *api.SessionCreateRequest) (*api.SessionCreateResponse, error) {
		return unary[api.SessionCreateResponse](n, ctx, api.MethodSessionCreate, &req.Write, func(c *fakeCluster) (any, error) { return c.createSession(req) })
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodSessionKeepalive), "session.keepalive", n.keepalive))
	must(rpc.Handle(s, rpc.Method(api.MethodSessionKeepaliveBatch), "session.keepalive-batch", n.keepaliveBatch))
	must(rpc.Handle(s, rpc.Method(api.MethodSessionDestroy), "session.destroy", func(ctx context.Context, req *api.SessionDestroyRequest) (*api.SessionDestroyResponse, error) {
		return unary[api.SessionDestroyResponse](n, ctx, api.MethodSessionDestroy, &req.Write, func(c *fakeCluster) (any, error) {
			if c.sessions[req.ID] == nil {
				return nil, api.Errorf(api.CodeSessionNotFound, "session %s not found", req.ID)
			}
			c.endSessionLocked(req.ID)
			return &api.SessionDestroyResponse{}, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodSessionInfo), "session.info", func(ctx context.Context, req *api.SessionInfoRequest) (*api.SessionInfoResponse, error) {
		return unary[api.SessionInfoResponse](n, ctx, api.MethodSessionInfo, nil, func(c *fakeCluster) (any, error) {
			info := c.sessions[req.ID]
			if info == nil {
				return nil, api.Errorf(api.CodeSessionNotFound, "session %s not found", req.ID)
			}
			return &api.SessionInfoResponse{Session: *info, Read: c.readInfo(n)}, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodSessionList), "session.list", func(ctx context.Context, req *api.SessionListRequest) (*api.SessionListResponse, error) {
		return unary[api.SessionListResponse](n, ctx, api.MethodSessionList, nil, func(c *fakeCluster) (any, error) {
			resp := &api.SessionListResponse{Read: c.readInfo(n)}
			for _, info := range c.sessions {
				resp.Sessions = append(resp.Sessions, *info)
			}
			sort.Slice(resp.Sessions, func(i, j int) bool { return resp.Sessions[i].ID < resp.Sessions[j].ID })
			return resp, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodLockAcquire), "lock.acquire", n.acquire))
	must(rpc.Handle(s, rpc.Method(api.MethodLockRelease), "lock.release", func(ctx context.Context, req *api.LockReleaseRequest) (*api.LockReleaseResponse, error) {
		return unary[api.LockReleaseResponse](n, ctx, api.MethodLockRelease, &req.Write, func(c *fakeCluster) (any, error) {
			l := c.locks[req.Name]
			if l == nil || l.holders[req.Session] == nil || l.holders[req.Session].Token != req.Token {
				return nil, api.Errorf(api.CodeStaleToken, "token %d is not session %s's current grant of lock %q", req.Token, req.Session, req.Name)
			}
			delete(l.holders, req.Session)
			c.settleLocked(req.Name)
			return &api.LockReleaseResponse{}, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodLockCheck), "lock.check", func(ctx context.Context, req *api.LockCheckRequest) (*api.LockCheckResponse, error) {
		return unary[api.LockCheckResponse](n, ctx, api.MethodLockCheck, nil, func(c *fakeCluster) (any, error) {
			resp := &api.LockCheckResponse{Read: c.readInfo(n)}
			if l := c.locks[req.Name]; l != nil {
				for _, g := range l.holders {
					if g.Token == req.Token {
						resp.Current, resp.Grant = true, *g
					}
				}
			}
			return resp, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodLockList), "lock.list", func(ctx context.Context, req *api.LockListRequest) (*api.LockListResponse, error) {
		return unary[api.LockListResponse](n, ctx, api.MethodLockList, nil, func(c *fakeCluster) (any, error) {
			resp := &api.LockListResponse{Read: c.readInfo(n)}
			for name, l := range c.locks {
				if !strings.HasPrefix(name, req.Prefix) {
					continue
				}
				info := api.LockInfo{Name: name}
				for _, g := range l.holders {
					info.Holders = append(info.Holders, *g)
				}
				for _, w := range l.waiters {
					info.Waiters = append(info.Waiters, *w)
				}
				resp.Locks = append(resp.Locks, info)
			}
			sort.Slice(resp.Locks, func(i, j int) bool { return resp.Locks[i].Name < resp.Locks[j].Name })
			return resp, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodKVGet), "kv.get", func(ctx context.Context, req *api.KVGetRequest) (*api.KVGetResponse, error) {
		return unary[api.KVGetResponse](n, ctx, api.MethodKVGet, nil, func(c *fakeCluster) (any, error) {
			resp := &api.KVGetResponse{Read: c.readInfo(n)}
			resp.Read.Stale = req.Read.Stale
			if kv, ok := c.kv[req.Key]; ok {
				resp.KV = &kv
			}
			return resp, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodKVList), "kv.list", func(ctx context.Context, req *api.KVListRequest) (*api.KVListResponse, error) {
		return unary[api.KVListResponse](n, ctx, api.MethodKVList, nil, func(c *fakeCluster) (any, error) {
			kvs, more := c.listLocked(req.Prefix, req.Start, req.Limit)
			return &api.KVListResponse{KVs: kvs, More: more, Read: c.readInfo(n)}, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodKVPut), "kv.put", func(ctx context.Context, req *api.KVPutRequest) (*api.KVPutResponse, error) {
		return unary[api.KVPutResponse](n, ctx, api.MethodKVPut, &req.Write, func(c *fakeCluster) (any, error) {
			if req.Session != 0 && c.sessions[req.Session] == nil {
				return nil, api.Errorf(api.CodeSessionNotFound, "session %s not found", req.Session)
			}
			rev := int64(c.next())
			prev := c.putLocked(req.Key, req.Value, req.Session, rev)
			return &api.KVPutResponse{Revision: rev, PrevKV: prev}, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodKVDelete), "kv.delete", func(ctx context.Context, req *api.KVDeleteRequest) (*api.KVDeleteResponse, error) {
		return unary[api.KVDeleteResponse](n, ctx, api.MethodKVDelete, &req.Write, func(c *fakeCluster) (any, error) {
			rev := int64(c.next())
			d, prev := c.deleteLocked(req.Key, req.Prefix, rev)
			return &api.KVDeleteResponse{Revision: rev, Deleted: d, PrevKV: prev}, nil
		})
	}))
	must(rpc.Handle(s, rpc.Method(api.MethodKVTxn), "kv.txn", func(ctx context.Context, req *api.KVTxnRequest) (*api.KVTxnResponse, error) {
		return unary[api.KVTxnResponse](n, ctx, api.MethodKVTxn, &req.Write, func(c *fakeCluster) (any, error) { return c.txnLocked(req) })
	}))
	must(rpc.HandleStream(s, rpc.Method(api.MethodWatch), "watch", n.watch))
	must(rpc.Handle(s, rpc.Method(api.MethodClusterStatus), "cluster.status", func(ctx context.Context, req *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
		return unary[api.ClusterStatusResponse](n, ctx, api.MethodClusterStatus, nil, func(c *fakeCluster) (any, error) {
			resp := &api.ClusterStatusResponse{Node: api.MemberStatus{ID: 1, Name: n.name, Role: "leader"}, Leader: 1, Term: 1}
			n.mu.Lock()
			if n.id != 0 {
				resp.Node.ID, resp.Leader, resp.Node.Role = n.id, n.leader, "follower"
				if n.leader == n.id {
					resp.Node.Role = "leader"
				}
			}
			n.mu.Unlock()
			for _, o := range c.nodes {
				resp.Members = append(resp.Members, api.MemberStatus{Name: o.name})
			}
			return resp, nil
		})
	}))
}

// unary runs a call: knobs, then f under the cluster's lock (through the
// exactly-once record for a write), then afterApply.
func unary[Resp any](n *fakeNode, ctx context.Context, method uint16, w *api.WriteHeader, f func(c *fakeCluster) (any, error)) (*Resp, error) {
	if err := n.enter(ctx, method); err != nil {
		return nil, err
	}
	fc := n.fc
	var resp any
	var err error
	if w != nil {
		resp, err = fc.write(ctx, n, method, *w, func() (any, error) { return f(fc) })
		n.applied(ctx, method)
	} else {
		fc.mu.Lock()
		resp, err = f(fc)
		fc.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	return resp.(*Resp), nil
}

func (fc *fakeCluster) readInfo(n *fakeNode) api.ReadInfo {
	return api.ReadInfo{Index: fc.index, Revision: fc.revision, Node: n.name}
}

func (fc *fakeCluster) createSession(req *api.SessionCreateRequest) (any, error) {
	ttl := time.Duration(req.TTL)
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	ld := time.Duration(req.LockDelay)
	if ld < 0 {
		ld = 5 * time.Second
	}
	id := session.ID(fc.next())
	info := &api.SessionInfo{ID: id, TTL: int64(ttl), LockDelay: int64(ld), Name: req.Name, ClientID: req.Write.ClientID, CreatedAt: time.Now().UnixNano()}
	fc.sessions[id] = info
	return &api.SessionCreateResponse{Session: *info}, nil
}

func (n *fakeNode) keepalive(ctx context.Context, req *api.SessionKeepaliveRequest) (*api.SessionKeepaliveResponse, error) {
	n.keepalives.Add(1)
	if err := n.enter(ctx, api.MethodSessionKeepalive); err != nil {
		return nil, err
	}
	n.mu.Lock()
	kerr := n.keepaliveErr
	n.mu.Unlock()
	if kerr != nil {
		return nil, kerr
	}
	fc := n.fc
	fc.mu.Lock()
	defer fc.mu.Unlock()
	info := fc.sessions[req.ID]
	if info == nil {
		return nil, api.Errorf(api.CodeSessionNotFound, "session %s not found (expired or destroyed)", req.ID)
	}
	return &api.SessionKeepaliveResponse{TTL: info.TTL}, nil
}

// keepaliveBatch answers per session as the server does; keepaliveErr
// fails the whole call, and keepalives counts calls, not sessions.
func (n *fakeNode) keepaliveBatch(ctx context.Context, req *api.SessionKeepaliveBatchRequest) (*api.SessionKeepaliveBatchResponse, error) {
	n.keepalives.Add(1)
	if err := n.enter(ctx, api.MethodSessionKeepaliveBatch); err != nil {
		return nil, err
	}
	if err := api.CheckKeepaliveBatch(len(req.IDs)); err != nil {
		return nil, err
	}
	n.mu.Lock()
	kerr := n.keepaliveErr
	n.mu.Unlock()
	if kerr != nil {
		return nil, kerr
	}
	fc := n.fc
	fc.mu.Lock()
	defer fc.mu.Unlock()
	resp := &api.SessionKeepaliveBatchResponse{Results: make([]api.KeepaliveResult, len(req.IDs))}
	for i, id := range req.IDs {
		if info := fc.sessions[id]; info != nil {
			resp.Results[i].TTL = info.TTL
		} else {
			resp.Results[i] = api.KeepaliveResult{Code: api.CodeSessionNotFound, Message: fmt.Sprintf("session %s not found (expired or destroyed)", id)}
		}
	}
	return resp, nil
}

// expire ends a session as the leader would on expiry.
func (fc *fakeCluster) expire(id session.ID) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.sessions[id] != nil {
		fc.endSessionLocked(id)
		fc.changedLocked()
	}
}

func (fc *fakeCluster) endSessionLocked(id session.ID) {
	delete(fc.sessions, id)
	for name, l := range fc.locks {
		delete(l.holders, id)
		kept := l.waiters[:0]
		for _, w := range l.waiters {
			if w.Session != id {
				kept = append(kept, w)
			}
		}
		l.waiters = kept
		fc.settleLocked(name)
	}
	var doomed []string
	for k, kv := range fc.kv {
		if kv.Session == id {
			doomed = append(doomed, k)
		}
	}
	if len(doomed) > 0 {
		rev := int64(fc.next())
		sort.Strings(doomed)
		for _, k := range doomed {
			fc.deleteLocked(k, false, rev)
		}
	}
}

func compatible(l *fakeLock, mode api.Mode, limit int) bool {
	if len(l.holders) == 0 {
		return true
	}
	for _, g := range l.holders {
		if g.Mode != mode || mode == api.Exclusive {
			return false
		}
	}
	return mode == api.Shared || len(l.holders) < limit
}

// settleLocked grants queued waiters in FIFO order while they fit.
func (fc *fakeCluster) settleLocked(name string) {
	l := fc.locks[name]
	for len(l.waiters) > 0 && compatible(l, l.waiters[0].Mode, l.waiters[0].Limit) {
		w := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.holders[w.Session] = &api.Grant{Lock: name, Session: w.Session, Token: fc.next(), Mode: w.Mode, Limit: w.Limit, WaitID: w.WaitID}
	}
}

// acquire grants at once, or queues and waits for the grant. A wait whose
// call ends without it is withdrawn (and a grant that raced it released),
// unless the client has since sent a newer Seq on the same lane: then it
// re-sent this acquire, and the wait belongs to that call (the guard the
// real server needs too: see handle in lock.go).
func (n *fakeNode) acquire(ctx context.Context, req *api.LockAcquireRequest) (*api.LockAcquireResponse, error) {
	if err := n.enter(ctx, api.MethodLockAcquire); err != nil {
		return nil, err
	}
	fc := n.fc
	var waitID uint64
	res, err := fc.write(ctx, n, api.MethodLockAcquire, req.Write, func() (any, error) {
		if fc.sessions[req.Session] == nil {
			return nil, api.Errorf(api.CodeSessionNotFound, "session %s not found", req.Session)
		}
		l := fc.locks[req.Name]
		if l == nil {
			l = &fakeLock{holders: map[session.ID]*api.Grant{}}
			fc.locks[req.Name] = l
		}
		if g := l.holders[req.Session]; g != nil {
			return &api.LockAcquireResponse{Grant: *g}, nil
		}
		for _, w := range l.waiters {
			if w.Session == req.Session {
				return w, nil
			}
		}
		if len(l.waiters) == 0 && compatible(l, req.Mode, req.Limit) {
			g := &api.Grant{Lock: req.Name, Session: req.Session, Token: fc.next(), Mode: req.Mode, Limit: req.Limit}
			l.holders[req.Session] = g
			return &api.LockAcquireResponse{Grant: *g}, nil
		}
		if !req.Wait {
			var hs []string
			for _, g := range l.holders {
				hs = append(hs, fmt.Sprintf("session %s (token %d)", g.Session, g.Token))
			}
			return nil, api.Errorf(api.CodeLockHeld, "lock %q is held by %s; retry with --wait", req.Name, strings.Join(hs, ", "))
		}
		w := &api.Waiter{Lock: req.Name, Session: req.Session, WaitID: fc.next(), Mode: req.Mode, Limit: req.Limit}
		l.waiters = append(l.waiters, w)
		return w, nil
	})
	n.applied(ctx, api.MethodLockAcquire)
	if err != nil {
		return nil, err
	}
	if r, ok := res.(*api.LockAcquireResponse); ok {
		return r, nil
	}
	waitID = res.(*api.Waiter).WaitID
	for {
		fc.mu.Lock()
		l := fc.locks[req.Name]
		if g := l.holders[req.Session]; g != nil {
			fc.mu.Unlock()
			return &api.LockAcquireResponse{Grant: *g}, nil
		}
		if fc.sessions[req.Session] == nil {
			fc.mu.Unlock()
			return nil, api.Errorf(api.CodeSessionNotFound, "session %s ended while waiting", req.Session)
		}
		queued := false
		for _, w := range l.waiters {
			queued = queued || w.WaitID == waitID
		}
		if !queued {
			fc.mu.Unlock()
			return nil, api.Errorf(api.CodeUnavailable, "wait %d of lock %q was withdrawn; send the acquire again", waitID, req.Name)
		}
		ch := fc.changed
		fc.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			fc.mu.Lock()
			if d := fc.dedup[req.Write.ClientID]; d.seq != req.Write.Seq {
				// The client sent the acquire again (a newer Seq on its
				// lane): the wait is that call's now; leave it alone.
				fc.mu.Unlock()
				return nil, ctx.Err()
			}
			kept := l.waiters[:0]
			for _, w := range l.waiters {
				if w.WaitID != waitID {
					kept = append(kept, w)
				}
			}
			l.waiters = kept
			if g := l.holders[req.Session]; g != nil && g.WaitID == waitID {
				delete(l.holders, req.Session)
			}
			fc.settleLocked(req.Name)
			fc.changedLocked()
			fc.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// grantWaiters is used by tests that need a release by someone else.
func (fc *fakeCluster) releaseAll(name string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if l := fc.locks[name]; l != nil {
		l.holders = map[session.ID]*api.Grant{}
		fc.settleLocked(name)
		fc.changedLocked()
	}
}

func (fc *fakeCluster) putLocked(key string, value []byte, sess session.ID, rev int64) *api.KeyValue {
	prev, had := fc.kv[key]
	kv := api.KeyValue{Key: key, Value: append([]byte(nil), value...), CreateRevision: rev, ModRevision: rev, Version: 1, Session: sess}
	var pp *api.KeyValue
	if had {
		kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
		pp = &prev
	}
	fc.kv[key] = kv
	fc.revision = rev
	fc.history = append(fc.history, api.Event{Type: api.EventPut, KV: kv, PrevKV: pp, Revision: rev})
	return pp
}

func (fc *fakeCluster) deleteLocked(key string, prefix bool, rev int64) (int, *api.KeyValue) {
	var keys []string
	for k := range fc.kv {
		if k == key || prefix && strings.HasPrefix(k, key) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var prev *api.KeyValue
	for _, k := range keys {
		p := fc.kv[k]
		delete(fc.kv, k)
		prev = &p
		fc.history = append(fc.history, api.Event{Type: api.EventDelete, KV: api.KeyValue{Key: k, ModRevision: rev}, PrevKV: &p, Revision: rev})
	}
	if len(keys) > 0 {
		fc.revision = rev
	}
	return len(keys), prev
}

func (fc *fakeCluster) listLocked(prefix, start string, limit int) ([]api.KeyValue, bool) {
	var keys []string
	for k := range fc.kv {
		if strings.HasPrefix(k, prefix) && k >= start {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	more := false
	if limit > 0 && len(keys) > limit {
		keys, more = keys[:limit], true
	}
	var out []api.KeyValue
	for _, k := range keys {
		out = append(out, fc.kv[k])
	}
	return out, more
}

func (fc *fakeCluster) txnLocked(req *api.KVTxnRequest) (any, error) {
	ok := true
	for _, c := range req.Compares {
		kv, exists := fc.kv[c.Key]
		var cmp int
		switch c.Target {
		case api.CompareValue:
			if !exists {
				ok = ok && c.Op == api.NotEqual
				continue
			}
			cmp = strings.Compare(string(kv.Value), string(c.Value))
		case api.CompareExists:
			v := int64(0)
			if exists {
				v = 1
			}
			cmp = cmpInt(v, c.Number)
		case api.CompareModRevision:
			cmp = cmpInt(kv.ModRevision, c.Number)
		case api.CompareCreateRevision:
			cmp = cmpInt(kv.CreateRevision, c.Number)
		case api.CompareVersion:
			cmp = cmpInt(kv.Version, c.Number)
		}
		switch c.Op {
		case api.Equal:
			ok = ok && cmp == 0
		case api.NotEqual:
			ok = ok && cmp != 0
		case api.Less:
			ok = ok && cmp < 0
		case api.Greater:
			ok = ok && cmp > 0
		}
	}
	ops := req.Else
	if ok {
		ops = req.Then
	}
	rev := fc.revision
	for _, op := range ops {
		if op.Type != api.OpGet {
			rev = int64(fc.next())
			break
		}
	}
	resp := &api.KVTxnResponse{Succeeded: ok, Revision: rev}
	for _, op := range ops {
		r := api.OpResult{Type: op.Type}
		switch op.Type {
		case api.OpPut:
			if op.Session != 0 && fc.sessions[op.Session] == nil {
				return nil, api.Errorf(api.CodeSessionNotFound, "session %s not found", op.Session)
			}
			r.PrevKV = fc.putLocked(op.Key, op.Value, op.Session, rev)
		case api.OpDelete:
			r.Deleted, r.PrevKV = fc.deleteLocked(op.Key, op.Prefix, rev)
		case api.OpGet:
			if op.Prefix {
				r.KVs, r.More = fc.listLocked(op.Key, "", op.Limit)
			} else if kv, ok := fc.kv[op.Key]; ok {
				r.KVs = []api.KeyValue{kv}
			}
		}
		resp.Ops = append(resp.Ops, r)
	}
	return resp, nil
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

// watch streams history from req.FromRevision, up to 3 revisions per
// message, then new events as they happen.
func (n *fakeNode) watch(ctx context.Context, req *api.WatchRequest, st *rpc.ServerStream) error {
	if err := n.enter(ctx, api.MethodWatch); err != nil {
		return err
	}
	fc := n.fc
	fc.mu.Lock()
	from := req.FromRevision
	if from == 0 {
		from = fc.revision + 1
	}
	if from <= fc.compacted {
		c := fc.compacted
		fc.mu.Unlock()
		return api.Errorf(api.CodeCompacted, "revision %d was compacted from the watch history; the oldest available is %d", from, c+1)
	}
	from = max(1, from-fc.replayOverlap)
	fc.mu.Unlock()
	for {
		fc.mu.Lock()
		var evs []api.Event
		revs := 0
		last := int64(0)
		for _, ev := range fc.history {
			if ev.Revision < from || !(ev.KV.Key == req.Key || req.Prefix && strings.HasPrefix(ev.KV.Key, req.Key)) {
				continue
			}
			if ev.Revision != last {
				if revs == 3 {
					break
				}
				revs++
				last = ev.Revision
			}
			evs = append(evs, ev)
		}
		ch := fc.changed
		fc.mu.Unlock()
		if len(evs) > 0 {
			if err := st.Send(&api.WatchMessage{Events: evs, NextRevision: last + 1}); err != nil {
				return err
			}
			from = last + 1
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
