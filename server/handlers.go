package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// startRPC registers the client API on both listeners (peers forward
// client calls too) and the internal forwarding methods on the peer one.
func (s *Server) startRPC() error {
	var err error
	mk := func(name string, maxFrame int, anyCluster bool) (*rpc.Server, error) {
		return rpc.NewServer(rpc.ServerConfig{ClusterID: s.cfg.ClusterID, AcceptUnnamedClients: anyCluster,
			Name: s.cfg.Name + " " + name, Errors: s.errors, MaxFrameSize: maxFrame, Logger: s.cfg.Logger.Named("rpc-" + name)})
	}
	// Clients may leave the cluster id out; peers must name it.
	if s.clientSrv, err = mk("client", 0, true); err != nil {
		return err
	}
	// Peer frames carry whole appends: room for the largest entry.
	if s.peerSrv, err = mk("peer", 8<<20, false); err != nil {
		return err
	}
	for _, srv := range []*rpc.Server{s.clientSrv, s.peerSrv} {
		if err := s.registerAPI(srv); err != nil {
			return err
		}
	}
	if err := s.transport.Register(s.peerSrv); err != nil {
		return err
	}
	if err := rpc.Handle(s.peerSrv, methodForwardPropose, "forward-propose", s.onForwardPropose); err != nil {
		return err
	}
	if err := rpc.Handle(s.peerSrv, methodForwardKeepalive, "forward-keepalive", s.onForwardKeepalive); err != nil {
		return err
	}
	if err := rpc.Handle(s.peerSrv, methodForwardKeepaliveBatch, "forward-keepalive-batch", s.onForwardKeepaliveBatch); err != nil {
		return err
	}
	if err := rpc.Handle(s.peerSrv, methodMembership, "membership", s.onMembership); err != nil {
		return err
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.clientSrv.Serve(s.cfg.ClientListener)
	}()
	go func() {
		defer s.wg.Done()
		_ = s.peerSrv.Serve(s.cfg.PeerListener)
	}()
	return nil
}

func (s *Server) registerAPI(srv *rpc.Server) error {
	return errors.Join(
		rpc.Handle(srv, rpc.Method(api.MethodSessionCreate), "session-create", s.onSessionCreate),
		rpc.Handle(srv, rpc.Method(api.MethodSessionKeepalive), "session-keepalive", s.onSessionKeepalive),
		rpc.Handle(srv, rpc.Method(api.MethodSessionDestroy), "session-destroy", s.onSessionDestroy),
		rpc.Handle(srv, rpc.Method(api.MethodSessionList), "session-list", s.onSessionList),
		rpc.Handle(srv, rpc.Method(api.MethodSessionInfo), "session-info", s.onSessionInfo),
		rpc.Handle(srv, rpc.Method(api.MethodLockAcquire), "lock-acquire", s.onLockAcquire),
		rpc.Handle(srv, rpc.Method(api.MethodLockRelease), "lock-release", s.onLockRelease),
		rpc.Handle(srv, rpc.Method(api.MethodLockCheck), "lock-check", s.onLockCheck),
		rpc.Handle(srv, rpc.Method(api.MethodLockList), "lock-list", s.onLockList),
		rpc.Handle(srv, rpc.Method(api.MethodKVGet), "kv-get", s.onKVGet),
		rpc.Handle(srv, rpc.Method(api.MethodKVPut), "kv-put", s.onKVPut),
		rpc.Handle(srv, rpc.Method(api.MethodKVDelete), "kv-delete", s.onKVDelete),
		rpc.Handle(srv, rpc.Method(api.MethodKVList), "kv-list", s.onKVList),
		rpc.Handle(srv, rpc.Method(api.MethodKVTxn), "kv-txn", s.onKVTxn),
		rpc.HandleStream(srv, rpc.Method(api.MethodWatch), "watch", s.onWatch),
		rpc.Handle(srv, rpc.Method(api.MethodClusterStatus), "cluster-status", s.onClusterStatus),
		rpc.Handle(srv, rpc.Method(api.MethodMemberAdd), "member-add", s.onMemberAdd),
		rpc.Handle(srv, rpc.Method(api.MethodMemberPromote), "member-promote", s.onMemberPromote),
		rpc.Handle(srv, rpc.Method(api.MethodMemberRemove), "member-remove", s.onMemberRemove),
		rpc.Handle(srv, rpc.Method(api.MethodLeaderTransfer), "leader-transfer", s.onLeaderTransfer),
		rpc.Handle(srv, rpc.Method(api.MethodSessionKeepaliveBatch), "session-keepalive-batch", s.onSessionKeepaliveBatch),
	)
}

// ---- forwarding ----

func (s *Server) onForwardPropose(ctx context.Context, req *forwardRequest) (*forwardResponse, error) {
	res, err := s.writeEncoded(ctx, req.Data, false, false)
	if err != nil {
		return nil, err
	}
	return &forwardResponse{Result: res}, nil
}

// ---- sessions ----

func (s *Server) onSessionCreate(ctx context.Context, req *api.SessionCreateRequest) (*api.SessionCreateResponse, error) {
	ttl, delay, err := s.cfg.FSM.Rules.Resolve(time.Duration(req.TTL), time.Duration(req.LockDelay))
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "%v", err)
	}
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := s.write(ctx, &fsm.Command{Kind: fsm.KindSessionCreate, ClientID: req.Write.ClientID, Seq: req.Write.Seq,
		SessionCreate: &fsm.SessionCreate{TTL: int64(ttl), LockDelay: int64(delay), Name: req.Name}})
	if err != nil {
		return nil, err
	}
	if err := resultErr(res); err != nil {
		return nil, err
	}
	return &api.SessionCreateResponse{Session: *res.Session}, nil
}

func (s *Server) onSessionDestroy(ctx context.Context, req *api.SessionDestroyRequest) (*api.SessionDestroyResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := s.write(ctx, &fsm.Command{Kind: fsm.KindSessionDestroy, ClientID: req.Write.ClientID, Seq: req.Write.Seq,
		SessionDestroy: &fsm.SessionDestroy{ID: req.ID}})
	if err != nil {
		return nil, err
	}
	return &api.SessionDestroyResponse{}, resultErr(res)
}

func (s *Server) onSessionList(ctx context.Context, req *api.SessionListRequest) (*api.SessionListResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	if err := s.read(ctx, req.Read); err != nil {
		return nil, err
	}
	return &api.SessionListResponse{Sessions: s.fsm.Sessions(), Read: s.readInfo(req.Read.Stale)}, nil
}

func (s *Server) onSessionInfo(ctx context.Context, req *api.SessionInfoRequest) (*api.SessionInfoResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	if err := s.read(ctx, req.Read); err != nil {
		return nil, err
	}
	info, ok := s.fsm.Session(req.ID)
	if !ok {
		return nil, api.Errorf(api.CodeSessionNotFound, "session %s does not exist (expired, destroyed, or never created)", req.ID)
	}
	return &api.SessionInfoResponse{Session: info, Read: s.readInfo(req.Read.Stale)}, nil
}

// ---- locks ----

func (s *Server) onLockAcquire(ctx context.Context, req *api.LockAcquireRequest) (*api.LockAcquireResponse, error) {
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	if req.Wait && req.WaitTimeout > 0 {
		var c2 context.CancelFunc
		callCtx, c2 = context.WithTimeout(callCtx, time.Duration(req.WaitTimeout))
		defer c2()
	}
	res, err := s.write(callCtx, &fsm.Command{Kind: fsm.KindLockAcquire, ClientID: req.Write.ClientID, Seq: req.Write.Seq,
		LockAcquire: &fsm.LockAcquire{Name: req.Name, Session: req.Session, Mode: req.Mode, Limit: req.Limit, Wait: req.Wait}})
	if err != nil {
		return nil, err
	}
	if err := resultErr(res); err != nil {
		return nil, err
	}
	if res.Grant != nil {
		return &api.LockAcquireResponse{Grant: *res.Grant}, nil
	}
	if res.Wait == nil {
		return nil, fmt.Errorf("lock %q: acquire returned neither a grant nor a wait", req.Name)
	}
	return s.awaitGrant(callCtx, req, *res.Wait)
}

// awaitGrant blocks until the queued wait is granted (seen by this node's
// own applier, so it works on any node and across leader changes), the
// session ends, or the call gives up — then the wait is withdrawn through
// the log, which also releases a grant that raced the give-up.
func (s *Server) awaitGrant(ctx context.Context, req *api.LockAcquireRequest, w api.Waiter) (*api.LockAcquireResponse, error) {
	s.blockedAcquires.Add(1)
	defer s.blockedAcquires.Add(-1)
	wt := s.waits.add(w.WaitID, req.Session, req.Name)
	defer s.waits.remove(w.WaitID, wt)
	// The grant may have been applied before we registered.
	if g, ok := s.grantFor(req.Name, req.Session, w.WaitID); ok {
		return &api.LockAcquireResponse{Grant: g}, nil
	}
	select {
	case o := <-wt.ch:
		if o.err != nil {
			return nil, o.err
		}
		return &api.LockAcquireResponse{Grant: *o.grant}, nil
	case <-ctx.Done():
	case <-s.stop:
	}
	// Withdraw with a fresh context: the caller's is done.
	cctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaderWait)
	defer cancel()
	_, err := s.write(cctx, &fsm.Command{Kind: fsm.KindLockCancel, LockCancel: &fsm.LockCancel{Name: req.Name, Session: req.Session,
		WaitID: w.WaitID, ClientID: req.Write.ClientID, Seq: req.Write.Seq}})
	if err != nil {
		s.logger.Warn("could not withdraw an abandoned lock wait; the session's end will", "lock", req.Name, "session", req.Session.String(), "error", err)
	}
	info := s.fsm.Lock(req.Name)
	holders := "nobody (it is queued behind earlier waiters or in lock-delay)"
	if len(info.Holders) > 0 {
		holders = fmt.Sprintf("session %s (token %d)", info.Holders[0].Session, info.Holders[0].Token)
	}
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, api.Errorf(api.CodeLockHeld, "lock %q was not granted in time; it is held by %s; the wait was withdrawn", req.Name, holders)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, api.Errorf(api.CodeUnavailable, "node %s is shutting down; the wait for lock %q was withdrawn, retry", s.cfg.Name, req.Name)
}

func (s *Server) grantFor(name string, sess session.ID, waitID uint64) (api.Grant, bool) {
	for _, g := range s.fsm.Lock(name).Holders {
		if g.Session == sess && g.WaitID == waitID {
			return g, true
		}
	}
	return api.Grant{}, false
}

func (s *Server) onLockRelease(ctx context.Context, req *api.LockReleaseRequest) (*api.LockReleaseResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := s.write(ctx, &fsm.Command{Kind: fsm.KindLockRelease, ClientID: req.Write.ClientID, Seq: req.Write.Seq,
		LockRelease: &fsm.LockRelease{Name: req.Name, Session: req.Session, Token: req.Token}})
	if err != nil {
		return nil, err
	}
	return &api.LockReleaseResponse{}, resultErr(res)
}

func (s *Server) onLockCheck(ctx context.Context, req *api.LockCheckRequest) (*api.LockCheckResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	if err := s.read(ctx, req.Read); err != nil {
		return nil, err
	}
	g, ok := s.fsm.CheckToken(req.Name, req.Token)
	return &api.LockCheckResponse{Current: ok, Grant: g, Read: s.readInfo(req.Read.Stale)}, nil
}

func (s *Server) onLockList(ctx context.Context, req *api.LockListRequest) (*api.LockListResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	if err := s.read(ctx, req.Read); err != nil {
		return nil, err
	}
	return &api.LockListResponse{Locks: s.fsm.Locks(req.Prefix), Read: s.readInfo(req.Read.Stale)}, nil
}

// ---- keys ----

func (s *Server) onKVGet(ctx context.Context, req *api.KVGetRequest) (*api.KVGetResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	if err := s.read(ctx, req.Read); err != nil {
		return nil, err
	}
	kv, ok, _ := s.fsm.Get(req.Key)
	resp := &api.KVGetResponse{Read: s.readInfo(req.Read.Stale)}
	if ok {
		resp.KV = &kv
	}
	return resp, nil
}

func (s *Server) onKVPut(ctx context.Context, req *api.KVPutRequest) (*api.KVPutResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := s.write(ctx, &fsm.Command{Kind: fsm.KindPut, ClientID: req.Write.ClientID, Seq: req.Write.Seq,
		Put: &fsm.Put{Key: req.Key, Value: req.Value, Session: req.Session}})
	if err != nil {
		return nil, err
	}
	if err := resultErr(res); err != nil {
		return nil, err
	}
	return &api.KVPutResponse{Revision: res.Revision, PrevKV: res.PrevKV}, nil
}

func (s *Server) onKVDelete(ctx context.Context, req *api.KVDeleteRequest) (*api.KVDeleteResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := s.write(ctx, &fsm.Command{Kind: fsm.KindDelete, ClientID: req.Write.ClientID, Seq: req.Write.Seq,
		Delete: &fsm.Delete{Key: req.Key, Prefix: req.Prefix}})
	if err != nil {
		return nil, err
	}
	if err := resultErr(res); err != nil {
		return nil, err
	}
	return &api.KVDeleteResponse{Revision: res.Revision, Deleted: res.Deleted, PrevKV: res.PrevKV}, nil
}

func (s *Server) onKVList(ctx context.Context, req *api.KVListRequest) (*api.KVListResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	if err := s.read(ctx, req.Read); err != nil {
		return nil, err
	}
	kvs, more, _ := s.fsm.List(req.Prefix, req.Start, req.Limit)
	return &api.KVListResponse{KVs: kvs, More: more, Read: s.readInfo(req.Read.Stale)}, nil
}

func (s *Server) onKVTxn(ctx context.Context, req *api.KVTxnRequest) (*api.KVTxnResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := s.write(ctx, &fsm.Command{Kind: fsm.KindTxn, ClientID: req.Write.ClientID, Seq: req.Write.Seq,
		Txn: &fsm.Txn{Compares: req.Compares, Then: req.Then, Else: req.Else}})
	if err != nil {
		return nil, err
	}
	if err := resultErr(res); err != nil {
		return nil, err
	}
	return &api.KVTxnResponse{Succeeded: res.Succeeded, Ops: res.Ops, Revision: res.Revision}, nil
}

// ---- watch ----

// watchBatch bounds the events of one stream message (whole revisions).
const watchBatch = 256

// onWatch streams events from the requested revision on, in order, with
// no gaps: each message ends at NextRevision, where the next one (or a
// reconnecting client) starts.
func (s *Server) onWatch(ctx context.Context, req *api.WatchRequest, st *rpc.ServerStream) error {
	if err := s.cfg.FSM.Limits.CheckKey("watch key", req.Key); err != nil && !(req.Prefix && req.Key == "") {
		return err
	}
	s.watchers.Add(1)
	defer s.watchers.Add(-1)
	from := req.FromRevision
	if from <= 0 {
		from = s.fsm.Stats().Revision + 1
	}
	// Tell the client where it starts, so it can resume even if nothing
	// matches for a long time.
	if err := st.Send(&api.WatchMessage{NextRevision: from}); err != nil {
		return err
	}
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	lastSent := from
	for {
		changed := s.changes.wait()
		evs, next, err := s.fsm.Events(from, req.Key, req.Prefix, watchBatch)
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			if err := st.Send(&api.WatchMessage{Events: evs, NextRevision: next}); err != nil {
				return err
			}
			lastSent = next
		}
		if next > from {
			from = next
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-progress.C:
			if from != lastSent {
				if err := st.Send(&api.WatchMessage{NextRevision: from}); err != nil {
					return err
				}
				lastSent = from
			}
		case <-ctx.Done():
			return nil
		case <-s.stop:
			return api.Errorf(api.CodeUnavailable, "node %s is shutting down; resume the watch on another node from revision %d", s.cfg.Name, from)
		}
	}
}

// ---- cluster ----

func (s *Server) onClusterStatus(ctx context.Context, _ *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
	st := s.node.Status()
	resp := &api.ClusterStatusResponse{Leader: uint64(st.Lead), Term: uint64(st.Term)}
	for _, m := range st.Config.Members {
		ms := memberStatus(m)
		if pr, ok := st.Progress[m.ID]; ok {
			ms.Match, ms.Active = uint64(pr.Match), pr.RecentActive
		}
		if m.ID == s.cfg.ID {
			ms.Role, ms.Term, ms.Commit, ms.Applied = st.Role.String(), uint64(st.Term), uint64(st.Commit), uint64(st.Applied)
			resp.Node = ms
		}
		resp.Members = append(resp.Members, ms)
	}
	return resp, nil
}
